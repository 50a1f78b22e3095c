"""Typed, strict reading of fields out of a document, with errors that say how to fix them.

Every getter takes the mapping, its field path and the key, so a wrong value is always
reported at its exact path. Unknown fields are errors (a typo must not be silently
ignored), except for the documented Kubernetes fields netlab deliberately ignores.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from netlab.errors import TopologyError
from netlab.topology.documents import Document, index, join, last_key

# Kubernetes-style names. Services must also start with a letter (DNS-1035), because
# their names become DNS labels; everything else follows DNS-1123 label rules.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
NAME_HELP = "use lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
SERVICE_NAME_HELP = "use lowercase letters, digits and '-', starting with a letter, at most 63 characters"
SUBDOMAIN_HELP = "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"


def type_name(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _type_fix(path: str, value: Any, expected: str) -> str:
    key = last_key(path)
    lead = "- " if key == "-" else f"{key}: "
    if expected == "a string" and isinstance(value, (bool, int, float)):
        shown = str(value).lower() if isinstance(value, bool) else value
        return f'quote the value so YAML reads it as text: {lead}"{shown}"'
    if expected == "an integer" and isinstance(value, str) and value.strip().isdigit():
        return f"remove the quotes: {lead}{value.strip()}"
    if expected == "a mapping":
        return f"write {key} as indented 'key: value' lines"
    if expected == "a list":
        return f"write {key} as a list, one '- ' item per line"
    return f"give {key} {expected}"


def wrong_type(doc: Document, path: str, value: Any, expected: str) -> TopologyError:
    return doc.error(path, f"expected {expected}, got {type_name(value)}",
                     _type_fix(path, value, expected))


def mapping(doc: Document, value: Any, path: str) -> dict[str, Any]:
    """`value` as a mapping; an empty YAML value counts as an empty mapping."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise wrong_type(doc, path, value, "a mapping")
    for key in value:
        if not isinstance(key, str):
            raise doc.error(join(path, key), f"field names must be text, got {type_name(key)}",
                            f'quote the key: "{key}": ...')
    return value


def check_fields(doc: Document, m: Mapping[str, Any], path: str, known: Iterable[str],
                 ignored: Iterable[str] = (), unsupported: Mapping[str, str] | None = None) -> None:
    """Reject fields that are neither read, nor ignored on purpose.

    `unsupported` maps Kubernetes fields netlab knows but cannot honour to a fix, because
    silently ignoring them (affinity, hostNetwork) would place or wire pods wrongly.
    """
    known, ignored = list(known), list(ignored)
    for key in m:
        if key in known or key in ignored:
            continue
        here = join(path, key)
        if unsupported and key in unsupported:
            raise doc.error(here, f"{key} is not supported by netlab", unsupported[key])
        close = close_match(key, known + ignored)
        listing = f"fields read here: {', '.join(known)}"
        if ignored:
            listing += f"; ignored: {', '.join(ignored)}"
        fix = f'did you mean "{close}"? ({listing})' if close else f"remove it ({listing})"
        raise doc.error(here, f'unknown field "{key}"', fix)


def required(doc: Document, m: Mapping[str, Any], path: str, key: str, example: str) -> Any:
    value = m.get(key)
    if value is None:
        problem = f"{key} is empty" if key in m else f"missing required field {key}"
        raise doc.error(join(path, key), problem, f"add it, e.g. {example}")
    return value


def _given(doc: Document, m: Mapping[str, Any], path: str, key: str, required_example: str | None) -> Any:
    """The field's value; None when it is optional and absent (required: absence is an error)."""
    if required_example is not None:
        return required(doc, m, path, key, required_example)
    return m.get(key)


def string(doc: Document, m: Mapping[str, Any], path: str, key: str, *, default: str | None = None,
           pattern: re.Pattern[str] | None = None, pattern_help: str = "",
           required_example: str | None = None) -> str | None:
    """A text field; with `required_example`, absence is an error showing that example."""
    here = join(path, key)
    value = _given(doc, m, path, key, required_example)
    if value is None:
        return default
    if not isinstance(value, str):
        raise wrong_type(doc, here, value, "a string")
    if pattern is not None and not pattern.match(value):
        raise doc.error(here, f"{value!r} is not a valid {key}", pattern_help)
    return value


def integer(doc: Document, m: Mapping[str, Any], path: str, key: str, *, default: int | None = None,
            low: int = 0, high: int = 2**31 - 1, required_example: str | None = None) -> int | None:
    here = join(path, key)
    value = _given(doc, m, path, key, required_example)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(doc, here, value, "an integer")
    if not low <= value <= high:
        raise doc.error(here, f"{value} is out of range", f"use a whole number from {low} to {high}")
    return value


def sequence(doc: Document, m: Mapping[str, Any], path: str, key: str) -> list[Any]:
    value = m.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise wrong_type(doc, join(path, key), value, "a list")
    return value


def string_list(doc: Document, m: Mapping[str, Any], path: str, key: str) -> list[str]:
    """A list of text, as command/args are: numbers must be quoted, as Kubernetes demands."""
    here = join(path, key)
    items = sequence(doc, m, path, key)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise wrong_type(doc, index(here, i), item, "a string")
    return list(items)


def string_map(doc: Document, m: Mapping[str, Any], path: str, key: str) -> dict[str, str]:
    """A label-style map of text to text."""
    here = join(path, key)
    value = mapping(doc, m.get(key), here)
    for k, v in value.items():
        if not isinstance(v, str):
            raise wrong_type(doc, join(here, k), v, "a string")
    return dict(value)


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' or ''."""
    close = close_match(word, choices)
    return f' (did you mean "{close}"?)' if close else ""


def close_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice the user most likely meant, or None.

    Case is compared last: `podCidr` is one edit per letter from `podCIDR` for difflib,
    but obviously the same word, and Istio's enums are upper case (`strict` → `STRICT`).
    """
    options = [c for c in choices if isinstance(c, str)]
    if word in options:
        return None
    folded: dict[str, str] = {}
    for option in options:
        folded.setdefault(option.casefold(), option)
    if word.casefold() in folded:
        return folded[word.casefold()]
    close = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=0.6)
    return folded[close[0]] if close else None
