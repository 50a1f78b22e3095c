"""YAML reading whose cost the file cannot choose: bounded size, depth and alias expansion.

A topology file is user input. PyYAML, left alone, lets a 3 KB "billion laughs" file
expand to gigabytes in any code that walks the data (jsonschema, json.dumps), lets a
deep `[[[[...` raise RecursionError, and turns `!!int abc` into a bare ValueError. This
module composes documents with limits checked while composing, constructs only the
JSON-shaped values Kubernetes itself accepts, and reports every failure as `YamlProblem`
with a line, which documents.py turns into a TopologyError naming the file.

Kubernetes reads YAML by converting it to JSON (sigs.k8s.io/yaml), so this reader does
the same conversions: unquoted dates stay text, numeric and boolean mapping keys become
text (`9080:` in a PeerAuthentication's portLevelMtls), and tags that have no JSON form
(`!!binary`, `!!set`, `!!omap`, `!!pairs`, any local `!tag`) are refused.

libyaml's parser is used when PyYAML was built with it (about ten times faster); the
composer stays PyYAML's Python one either way, so the depth check runs before any
recursion can get deep.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

try:  # libyaml's event parser; the composer and constructor below stay in Python
    from yaml.cyaml import CParser as _EventParser

    def _init_parser(loader: Any, text: str) -> None:
        _EventParser.__init__(loader, text)
except ImportError:  # PyYAML built without libyaml: the pure-Python reader, scanner and parser
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _EventParser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        pass

    def _init_parser(loader: Any, text: str) -> None:
        Reader.__init__(loader, text)
        Scanner.__init__(loader)
        Parser.__init__(loader)

# Limits. Every example under topologies/ and netlab/labs/ is under 16 KB, nests at most
# 8 deep and has a few hundred values; Istio's and Kubernetes' sample manifests are of the
# same order. The limits leave a wide margin above that while keeping the worst file
# within the loader's budget of a second and 100 MiB.
MAX_FILE_BYTES = 1024 * 1024
"""A topology file larger than this is refused before it is parsed."""
MAX_DEPTH = 64
"""Nesting of mappings and lists in one document."""
MAX_VALUES = 50_000
"""Values (scalars, mappings, lists) across all the files of one load, counting each
alias as a full copy of what it names: this bounds an alias bomb, and the work of
validating and planning (about 1,000 documents; bookinfo has 400 values)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_UNSUPPORTED_TAGS = {
    "tag:yaml.org,2002:binary": "!!binary",
    "tag:yaml.org,2002:set": "!!set",
    "tag:yaml.org,2002:omap": "!!omap",
    "tag:yaml.org,2002:pairs": "!!pairs",
}


@dataclass
class YamlProblem(Exception):
    """A file that cannot be read as Kubernetes YAML; `line` is 1-based when known."""

    problem: str
    fix: str
    line: int | None = None
    document: int | None = None


@dataclass
class Budget:
    """How many values a load may still construct; shared by all the files of one load."""

    values: int = MAX_VALUES


def _line(node_or_mark: Any) -> int | None:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return mark.line + 1 if mark is not None else None


class _KubeConstructor(SafeConstructor):
    """SafeConstructor narrowed to the values sigs.k8s.io/yaml's YAML → JSON step yields."""

    yaml_constructors = dict(SafeConstructor.yaml_constructors)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ConstructorError, YamlProblem):
            raise
        except (ValueError, TypeError, LookupError, ArithmeticError) as e:
            # `!!int abc`, `!!bool maybe` (KeyError), a 5,000-digit integer: PyYAML raises bare errors.
            raise ConstructorError(None, None, f"{node.tag.replace('tag:yaml.org,2002:', '!!')} "
                                   f"value {_shorten(str(node.value))} cannot be read: {e}",
                                   node.start_mark) from None

    def construct_kube_mapping(self, node: MappingNode) -> dict[str, Any]:
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _mapping_key(self.construct_object(key_node, deep=True), key_node)
            mapping[key] = self.construct_object(value_node, deep=False)
        return mapping

    def construct_kube_map(self, node: MappingNode) -> Iterator[dict[str, Any]]:
        data: dict[str, Any] = {}
        yield data
        data.update(self.construct_kube_mapping(node))

    def construct_kube_str(self, node: ScalarNode) -> str:
        value = self.construct_scalar(node)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConstructorError(None, None, "the text holds an unpaired surrogate escape (\\ud800-\\udfff)",
                                   node.start_mark) from None
        return value

    def construct_kube_float(self, node: ScalarNode) -> float:
        value = self.construct_yaml_float(node)
        if not math.isfinite(value):
            raise ConstructorError(None, None, f"{node.value!r} is not a finite number (JSON has no inf or nan)",
                                   node.start_mark)
        return value

    def construct_as_text(self, node: ScalarNode) -> str:
        """Unquoted dates: Kubernetes keeps them as the text written."""
        return self.construct_kube_str(node)

    def construct_unsupported(self, node: Node) -> Any:
        raise ConstructorError(None, None, f"the tag {_UNSUPPORTED_TAGS.get(node.tag, node.tag)} has no JSON form, "
                               "so Kubernetes cannot read it", node.start_mark)


_KubeConstructor.add_constructor("tag:yaml.org,2002:map", _KubeConstructor.construct_kube_map)
_KubeConstructor.add_constructor("tag:yaml.org,2002:str", _KubeConstructor.construct_kube_str)
_KubeConstructor.add_constructor("tag:yaml.org,2002:float", _KubeConstructor.construct_kube_float)
_KubeConstructor.add_constructor("tag:yaml.org,2002:timestamp", _KubeConstructor.construct_as_text)
for _tag in _UNSUPPORTED_TAGS:
    _KubeConstructor.add_constructor(_tag, _KubeConstructor.construct_unsupported)
_KubeConstructor.add_constructor(None, _KubeConstructor.construct_unsupported)  # any other tag


def _mapping_key(key: Any, node: Node) -> str:
    """A mapping key as JSON has it: text. Numbers and booleans become their text, as in Kubernetes."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return str(node.value)
    what = "an empty key" if key is None else f"a {type(key).__name__} as a key"
    raise ConstructorError(None, None, f"{what}: mapping keys must be text", node.start_mark)


def _shorten(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class KubeYamlLoader(Composer, _EventParser, _KubeConstructor, Resolver):  # type: ignore[misc]
    """Composer first in the MRO, so documents are composed in Python with the depth check."""

    def __init__(self, text: str) -> None:
        _init_parser(self, text)
        _KubeConstructor.__init__(self)
        Resolver.__init__(self)
        Composer.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise YamlProblem(f"the document nests deeper than {MAX_DEPTH} levels",
                                  "flatten the structure; no Kubernetes object nests this deep", _line(event))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def expanded_size(root: Node, limit: int) -> int:
    """Values in `root` with every alias counted as a copy; stops counting above `limit`.

    Shared nodes are sized once (memoised), so this costs the distinct nodes, not the
    expansion. A node that contains itself (`&a [*a]`) is refused: it would never end.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if not children_done:
            open_nodes.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    raise YamlProblem("an alias refers to a mapping or list that contains it",
                                      "replace the alias with the values it should hold", _line(child))
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        open_nodes.discard(key)
        total = 1 + sum(sizes[id(c)] for c in children)
        sizes[key] = total
        if total > limit:
            return total
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def documents(text: str, budget: Budget) -> Iterator[tuple[int, Node | None, Any]]:
    """(1-based number, node, data) for every document of `text`; node is None for an empty one.

    Raises YamlProblem for any limit, and lets yaml.YAMLError through for syntax (the
    caller knows the file name to put on it).
    """
    loader = KubeYamlLoader(text)
    number = 1
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                yield number, None, None
                number += 1
                continue
            size = expanded_size(node, budget.values)
            if size > budget.values:
                raise YamlProblem(
                    f"the topology holds more than {MAX_VALUES:,} values, counting each alias (*name) as "
                    "a copy of what it names",
                    "a lab needs far fewer; if the file uses aliases, write the values out instead of "
                    "aliases of aliases, which multiply the size at each step", _line(node), number)
            budget.values -= size
            try:
                data = loader.construct_document(node)
            except YamlProblem as e:
                e.document = number
                raise
            yield number, node, data
            number += 1
    except YamlProblem as e:
        if e.document is None:
            e.document = number
        raise
    except yaml.YAMLError as e:
        e.netlab_document = number  # type: ignore[attr-defined]  # the document being read
        raise
    finally:
        loader.dispose()


_KEYS = _KubeConstructor()


def scalar_key(node: ScalarNode) -> str:
    """The text a scalar mapping key becomes (the line map in documents.py spells paths with it)."""
    constructor = _KEYS.yaml_constructors.get(node.tag, _KubeConstructor.construct_unsupported)
    return _mapping_key(constructor(_KEYS, node), node)
