"""Parse the series selectors out of a PromQL string and test labels against them.

Why: a lab must say *which series* a Kiali query selects and which it misses
(the waypoint→ratings panel query selects nothing because of one matcher). That
needs only the `metric{a="x",b=~"y|z",c!="w"}` parts, not a PromQL engine: rate,
sum and round never add or drop a series that the selector chose, except that
`> 0` drops zero rates, which callers judge on values, not labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPS = ("=~", "!~", "!=", "=")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class Matcher:
    """One label matcher; `value` is the unescaped string."""

    name: str
    op: str  # "=", "!=", "=~" or "!~"
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        """PromQL semantics: a missing label is the empty string; regexes are anchored."""
        have = labels.get(self.name, "")
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        hit = re.fullmatch(self.value, have) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class Selector:
    """`metric{matchers}` as written in the query."""

    metric: str
    matchers: tuple[Matcher, ...]

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a series with these labels (`__name__` included or not) is selected."""
        name = labels.get("__name__", self.metric)
        return name == self.metric and all(m.matches(labels) for m in self.matchers)

    def get(self, name: str) -> Matcher | None:
        """The first matcher on label `name`."""
        return next((m for m in self.matchers if m.name == name), None)


def _string(text: str, i: int) -> tuple[str, int]:
    """A double-quoted PromQL string starting at text[i]; returns (value, index after)."""
    if text[i] != '"':
        raise ValueError(f"expected a quoted value at {i}: {text[i:i + 20]!r}")
    out: list[str] = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise ValueError("unterminated string in selector")


def parse_matchers(body: str) -> tuple[Matcher, ...]:
    """Matchers of one `{…}` body (without the braces): `a="x",b=~"y|z",c!="w"`."""
    out: list[Matcher] = []
    i = 0
    while i < len(body):
        while i < len(body) and body[i] in " ,":
            i += 1
        if i >= len(body):
            break
        m = _LABEL.match(body, i)
        if not m:
            raise ValueError(f"expected a label name at {i}: {body[i:i + 20]!r}")
        name, i = m.group(0), m.end()
        op = next((o for o in _OPS if body.startswith(o, i)), None)
        if op is None:
            raise ValueError(f"expected an operator after {name!r}")
        value, i = _string(body, i + len(op))
        out.append(Matcher(name, op, value))
    return tuple(out)


def selectors(promql: str) -> list[Selector]:
    """Every `metric{…}` in the query, in order of appearance."""
    out: list[Selector] = []
    i = 0
    while i < len(promql):
        c = promql[i]
        if c == '"':
            _, i = _string(promql, i)
            continue
        m = _IDENT.match(promql, i)
        if not m:
            i += 1
            continue
        end = m.end()
        if end < len(promql) and promql[end] == "{":
            j = end + 1
            while promql[j] != "}":
                j = _string(promql, j)[1] if promql[j] == '"' else j + 1
            out.append(Selector(m.group(0), parse_matchers(promql[end + 1:j])))
            i = j + 1
        else:
            i = end
    return out


def selected(promql: str, series: list[dict[str, str]]) -> list[dict[str, str]]:
    """The series (label sets carrying `__name__`) that any selector of the query picks."""
    sels = selectors(promql)
    return [labels for labels in series if any(s.matches(labels) for s in sels)]
