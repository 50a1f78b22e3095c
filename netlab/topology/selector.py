"""Label selectors as kubectl's `-l` reads them: `app=ratings,version in (v1,v2),!canary`.

Why our own: the grammar is small and fixed (k8s.io/apimachinery/pkg/labels, `Parse`),
and a user's mistake must come back as one located NetlabError, not a traceback.

Requirements are joined by commas (AND). Each is one of
`key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`.
As in Kubernetes, `!=` and `notin` also match objects that lack the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from netlab.errors import NetlabError

# A qualified name: optional DNS-subdomain prefix and '/', then a name of <= 63 characters.
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"  # a label value may be empty
_EXISTS = re.compile(rf"^({_KEY})$")
_NOT_EXISTS = re.compile(rf"^!\s*({_KEY})$")
_EQUALITY = re.compile(rf"^({_KEY})\s*(==|!=|=)\s*({_VALUE})$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
EXAMPLE = "app=ratings,version in (v1,v2),!canary"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists | !exists | = | != | in | notin
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        have = self.key in labels
        if self.op == "exists":
            return have
        if self.op == "!exists":
            return not have
        if self.op in ("=", "in"):
            return have and labels[self.key] in self.values
        return not have or labels[self.key] not in self.values  # != and notin


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def parse(text: str) -> Selector:
    """The selector `text` means, or one NetlabError naming the part that is wrong."""
    return Selector(tuple(_requirement(text, part.strip()) for part in _split(text)))


def _split(text: str) -> list[str]:
    """Split at commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _error(text, text, "a ')' without its '('")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise _error(text, text, "a '(' is never closed")
    parts.append(text[start:])
    return parts


def _requirement(text: str, part: str) -> Requirement:
    if not part:
        raise _error(text, part, "an empty requirement (two commas, or a comma at an end)")
    if m := _NOT_EXISTS.match(part):
        return Requirement(m.group(1), "!exists")
    if m := _EXISTS.match(part):
        return Requirement(m.group(1), "exists")
    if m := _EQUALITY.match(part):
        op = "=" if m.group(2) in ("=", "==") else "!="
        return Requirement(m.group(1), op, (m.group(3),))
    if m := _SET.match(part):
        values = tuple(v.strip() for v in m.group(3).split(","))
        bad = [v for v in values if not re.fullmatch(_VALUE, v)]
        if bad or not m.group(3).strip():
            raise _error(text, part, f"{'bad value ' + repr(bad[0]) if bad else 'an empty value list'} "
                         f"in {m.group(2)} (...)")
        return Requirement(m.group(1), m.group(2), values)
    return _unreadable(text, part)


def _unreadable(text: str, part: str) -> Requirement:
    if re.match(r"^\S+\s*(in|notin)\s*[^(\s]", part):
        raise _error(text, part, "a set needs parentheses, e.g. version in (v1,v2)")
    if "=" in part or "!" in part:
        raise _error(text, part, "a key is a label name (optionally prefix/name) and a value at most "
                     "63 letters, digits, '-', '_' or '.'")
    raise _error(text, part, "not a requirement")


def _error(text: str, part: str, why: str) -> NetlabError:
    return NetlabError(f"label selector {text!r}: {why} at {part!r}; "
                       f"write requirements like kubectl's -l, e.g. {EXAMPLE!r}")
