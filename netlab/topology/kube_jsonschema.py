"""jsonschema, extended with what Kubernetes' validation means and plain JSON Schema does not.

Used for both the vendored CRDs (crd.py) and Kubernetes' own OpenAPI schemas
(k8s_schema.py), so a duplicate list key or an over-long patterned string is treated
the same in a Deployment as in an HTTPRoute.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema
from referencing import Registry


def kube_validator(schema: dict[str, Any], registry: Registry | None = None) -> jsonschema.protocols.Validator:
    """A draft 2020-12 validator that also knows Kubernetes' list types and checks IP formats."""
    if registry is None:
        return _validator_class()(schema, format_checker=_FORMATS)
    return _validator_class()(schema, format_checker=_FORMATS, registry=registry)


_FORMATS = jsonschema.FormatChecker(formats=("ipv4", "ipv6"))


@functools.cache
def _validator_class() -> Any:
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, {
        "x-kubernetes-list-type": _list_type,
        "pattern": _bounded_pattern,
    })


def _list_type(validator: Any, list_type: str, instance: Any, schema: dict[str, Any]) -> Any:
    """x-kubernetes-list-type: `set` items and `map` keys must be unique (the API server refuses
    duplicates; an `atomic` list is any list)."""
    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen: set[str] = set()
        for item in instance:
            key = json.dumps(item, sort_keys=True, default=str)
            if key in seen:
                yield jsonschema.ValidationError(f"{key} is listed twice; this list is a set")
                return
            seen.add(key)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen_keys: set[str] = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = repr(tuple(item.get(k) for k in keys))
            if key in seen_keys:
                named = ", ".join(f"{k}: {item.get(k)!r}" for k in keys)
                yield jsonschema.ValidationError(f"two items have the same {named}; each must be unique")
                return
            seen_keys.add(key)


MAX_PATTERN_INPUT = 4096
"""Python's regexes backtrack where the API server's (RE2) do not: a long crafted string
could make a CRD pattern take minutes. Longer strings are refused without matching."""


def _bounded_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    if not isinstance(instance, str):
        return
    limit = min(schema.get("maxLength", MAX_PATTERN_INPUT), MAX_PATTERN_INPUT)
    if len(instance) > limit:
        if "maxLength" not in schema or schema["maxLength"] > MAX_PATTERN_INPUT:
            yield jsonschema.ValidationError(f"the text is {len(instance)} characters long, more than "
                                             f"{MAX_PATTERN_INPUT} can be checked here")
        return  # maxLength reports it
    if not _regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
