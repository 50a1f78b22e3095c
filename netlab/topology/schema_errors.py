"""One jsonschema error → one TopologyError that names the field and says how to fix it.

Shared by the three schemas the loader applies (the Lab's own, the vendored CRDs, and
Kubernetes' OpenAPI schemas), so a typo reads the same whichever document it is in:
the field path Kubernetes-style, the line, and "did you mean" for field names and enum
values, case-insensitively first (`podCidr` → `podCIDR`, `strict` → `STRICT`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from jsonschema.exceptions import ValidationError, best_match, by_relevance

from netlab.errors import TopologyError
from netlab.topology.documents import Document, index, join, last_key
from netlab.topology.fields import close_match, type_name

_JSON_TYPES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "empty"}
_MAX_LISTED = 24


def schema_error(doc: Document, error: ValidationError, *, prefix: str = "", schema_name: str,
                 hints: bool = False) -> TopologyError:
    """The TopologyError for `error`, found validating the part of `doc` at `prefix`.

    `hints` adds the schema's own description and examples to the fix: right for the
    Lab schema, whose descriptions are written for this; upstream CRD descriptions are
    paragraphs, so for them the fix names the schema instead.
    """
    path = prefix
    for part in error.absolute_path:
        path = index(path, part) if isinstance(part, int) else join(path, part)
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance, kind = error.instance, error.validator
    field = last_key(path) if path else "the document"
    about = _about(schema) if hints else ""

    if kind == "required":
        missing = next((r for r in error.validator_value if isinstance(instance, dict) and r not in instance), "?")
        sub = schema.get("properties", {}).get(missing, {})
        extra = f"{_example(missing, sub, ', e.g. ')}{_about(sub)}" if hints else f" (required by {schema_name})"
        return doc.error(join(path, missing), f"missing required field {missing}", f"add {missing}{extra}")
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = [str(k) for k in schema.get("properties", {})]
        extra_keys = [k for k in instance if k not in allowed]
        unknown = str(extra_keys[0]) if extra_keys else "?"
        close = close_match(unknown, allowed)
        fix = f'did you mean "{close}"?' if close else "remove it"
        listing = f"fields here: {_listing(allowed)}" if allowed else "this mapping takes no fields"
        return doc.error(join(path, unknown), f'unknown field "{unknown}"', f"{fix} ({listing})")
    if kind == "type":
        wanted = error.validator_value
        names = [wanted] if isinstance(wanted, str) else [w for w in wanted if w != "null"] or list(wanted)
        expected = " or ".join(_JSON_TYPES.get(n, n) for n in names)
        lead = "- " if field == "-" else f"{field}: "
        if names == ["string"] and isinstance(instance, (int, float, bool)):
            shown = str(instance).lower() if isinstance(instance, bool) else instance
            fix = f'quote the value so YAML reads it as text: {lead}"{shown}"'
        elif names == ["integer"] and isinstance(instance, str) and instance.strip().isdigit():
            fix = f"remove the quotes: {lead}{instance.strip()}"
        elif names == ["object"]:
            fix = f"write {field} as indented 'key: value' lines{_example(field, schema, ', e.g. ') if hints else ''}"
        elif names == ["array"]:
            fix = f"write {field} as a list, one '- ' item per line"
        else:
            fix = f"give {field} {expected}{_example(field, schema, ', e.g. ') if hints else ''}"
        return doc.error(path, f"expected {expected}, got {type_name(instance)}", fix + about)
    if kind in ("enum", "const"):
        choices = list(error.validator_value) if kind == "enum" else [error.validator_value]
        close = close_match(instance, [c for c in choices if isinstance(c, str)]) if isinstance(instance, str) \
            else None
        allowed = ", ".join(json.dumps(c) for c in choices)
        fix = f"did you mean {json.dumps(close)}? (allowed: {allowed}; values are case-sensitive)" if close \
            else f"use {allowed}"
        return doc.error(path, f"{field} {_short(instance)} is not allowed", fix + about)
    limits = {
        "minItems": (f"{field} needs at least {error.validator_value} item(s)", "add items"),
        "maxItems": (f"{field} has more than {error.validator_value} items", "remove some"),
        "minLength": (f"{field} must be at least {error.validator_value} characters long", "give a longer value"),
        "maxLength": (f"{field} is longer than {error.validator_value} characters", "shorten it"),
        "minimum": (f"{_short(instance)} is below the minimum {error.validator_value}",
                    f"use {error.validator_value} or more"),
        "maximum": (f"{_short(instance)} is above the maximum {error.validator_value}",
                    f"use {error.validator_value} or less"),
        "minProperties": (f"{field} needs at least {error.validator_value} field(s)", "add entries, or remove it"),
        "maxProperties": (f"{field} has more than {error.validator_value} fields", "remove some"),
        "uniqueItems": (f"{field} lists an item twice", "list each item once"),
    }
    if kind in limits:
        problem, fix = limits[kind]
        return doc.error(path, problem, f"{fix}{about or f' ({schema_name})'}")
    if kind == "pattern":
        return doc.error(path, f"{_short(instance)} is not a valid {field}",
                         f"use a value matching {error.validator_value}{about}"
                         f"{_example(field, schema, '; e.g. ') if hints else ''}")
    if kind == "format":
        return doc.error(path, f"{_short(instance)} is not a valid {error.validator_value} value",
                         f"give an {error.validator_value} address" if error.validator_value in ("ipv4", "ipv6")
                         else f"give a {error.validator_value} value")
    branches = error.validator_value if kind in ("oneOf", "anyOf") else None
    if branches and all(isinstance(b, dict) and b.keys() <= {"type", "format"} and "type" in b for b in branches):
        names: list[str] = []
        for b in branches:
            for t in [b["type"]] if isinstance(b["type"], str) else b["type"]:
                if t != "null" and _JSON_TYPES.get(t, t) not in names:
                    names.append(_JSON_TYPES.get(t, t))
        return doc.error(path, f"expected {' or '.join(names)}, got {type_name(instance)}",
                         f"give {field} {' or '.join(names)}{about}")
    if kind in ("oneOf", "anyOf", "not", "allOf"):
        return doc.error(path, f"{field} does not fit any of the forms {schema_name} allows",
                         f"check which fields may be given together here{about}")
    return doc.error(path, _short_message(error.message), f"see {schema_name}{about}")


def first_error(validator: Any, instance: Any) -> ValidationError | None:
    """The error to report, of all `instance` has.

    A typo'd field gives two errors at once: the unknown field and the required one it
    was meant to be. The unknown field, with its "did you mean", is the useful one.
    """
    return best_match(validator.iter_errors(instance), key=_RELEVANCE)


_RELEVANCE = by_relevance(strong=frozenset({"additionalProperties"}))


def _listing(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _short_message(message: str, limit: int = 200) -> str:
    message = re.sub(r"\s+", " ", message)
    return message if len(message) <= limit else message[:limit] + "..."


def _about(schema: dict[str, Any]) -> str:
    description = schema.get("description", "")
    return f" ({description.rstrip('.')})" if description else ""


def _example(field: str, schema: dict[str, Any], lead: str) -> str:
    examples = schema.get("examples")
    return f"{lead}{field}: {json.dumps(examples[0])}" if examples else ""
