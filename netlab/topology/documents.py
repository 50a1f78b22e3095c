"""Reading topology files into documents that remember where every value came from.

PyYAML's constructed data forgets positions, so each document is first composed to
nodes and a map from field path to line number is built beside the plain data. Errors
found long after parsing (the cross-reference checks) can then still say `file:line`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netlab.errors import TopologyError
from netlab.model import Source

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_LAST_SEGMENT = re.compile(r'(?:^|\.)[A-Za-z_][A-Za-z0-9_-]*$|\[\d+\]$|\["(?:[^"\\]|\\.)*"\]$')
_MERGE_TAG = "tag:yaml.org,2002:merge"


def join(path: str, key: Any) -> str:
    """Field path of `key` under `path`, spelled the way Kubernetes docs spell it.

    Keys that are not identifiers (label keys such as `istio.io/use-waypoint`) are quoted
    in brackets so the path stays unambiguous.
    """
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(str(key))}]"


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def parent(path: str) -> str:
    """The path one level up; "" is the document itself."""
    m = _LAST_SEGMENT.search(path)
    return path[: m.start()] if m else ""


def last_key(path: str) -> str:
    """The last segment as a user would write it in YAML: `image`, `a.b/c`, or `-` for a list item."""
    m = _LAST_SEGMENT.search(path)
    if not m:
        return path
    segment = m.group(0).lstrip(".")
    if segment.startswith('["'):
        return str(json.loads(segment[1:-1]))
    return "-" if segment.startswith("[") else segment


@dataclass
class Document:
    """One YAML document: its plain data plus the line of every field path in it."""

    file: str
    number: int  # 1-based within its file
    data: Any
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        """Line of `path`, or of its nearest ancestor that has one (a defaulted field has none)."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = parent(path)

    def error(self, path: str, problem: str, fix: str) -> TopologyError:
        return TopologyError(self.file, self.number, path, problem, fix, self.line_of(path))

    def source(self) -> Source:
        return Source(self.file, self.number, self.lines.get(""))


def read_file(path: str) -> list[Document]:
    """Every non-empty document in `path`, in order. Raises TopologyError on unreadable YAML."""
    text = _read_text(path)
    loader = yaml.SafeLoader(text)
    documents: list[Document] = []
    number = 1
    try:
        while loader.check_node():
            node = loader.get_node()
            _reject_duplicate_keys(path, number, node)
            data = loader.construct_document(node)
            if data is not None:
                lines: dict[str, int] = {}
                _collect_lines(loader, node, "", lines, set())
                lines[""] = node.start_mark.line + 1
                documents.append(Document(path, number, data, lines))
            number += 1
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(path, number, e) from None
    except yaml.YAMLError as e:  # e.g. a reader error for a control character
        raise TopologyError(path, number, "", f"the file is not valid YAML: {e}",
                            "remove the offending character or fix the YAML syntax") from None
    finally:
        loader.dispose()
    return documents


def _read_text(path: str) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(path, None, "", "file not found",
                            "check the path (relative paths are taken from the current directory)") from None
    except IsADirectoryError:
        raise TopologyError(path, None, "", "this is a directory, not a file",
                            "name the YAML files inside it, e.g. topologies/bookinfo.yaml") from None
    except UnicodeDecodeError as e:
        raise TopologyError(path, None, "", f"the file is not UTF-8 text ({e.reason} at byte {e.start})",
                            "save the file as UTF-8") from None
    except OSError as e:
        raise TopologyError(path, None, "", f"cannot read the file: {e.strerror}",
                            "check that the file exists and is readable") from None


def _syntax_error(path: str, number: int, e: yaml.MarkedYAMLError) -> TopologyError:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark else None
    problem = " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
    if "'\\t'" in problem:
        fix = "indent with spaces; YAML does not allow tabs for indentation"
    else:
        fix = (f"fix the YAML syntax near line {line}: check the indentation, that each key is "
               "followed by ': ' and that quotes and brackets are closed")
    return TopologyError(path, number, "", f"YAML syntax error: {problem}", fix, line)


def _reject_duplicate_keys(path: str, number: int, node: yaml.Node) -> None:
    """PyYAML keeps the last of two equal keys silently; Kubernetes rejects them, and so do we."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(node, "")]
    while stack:
        current, where = stack.pop()
        if id(current) in seen_nodes:
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: dict[str, int] = {}
            for key_node, value_node in current.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = key_node.value
                here = join(where, key)
                line = key_node.start_mark.line + 1
                if key in keys:
                    raise TopologyError(path, number, here,
                                        f"duplicate key {key!r} (first given on line {keys[key]})",
                                        "keep one of the two; YAML would silently use only the last",
                                        line)
                keys[key] = line
                stack.append((value_node, here))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((child, index(where, i)) for i, child in enumerate(current.value))


def _collect_lines(loader: yaml.SafeLoader, node: yaml.Node, path: str,
                   lines: dict[str, int], seen: set[int]) -> None:
    """Record the line of each mapping key and sequence item (aliases are walked once)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None and not isinstance(key_node, yaml.ScalarNode):
                continue
            here = join(path, key)
            lines.setdefault(here, key_node.start_mark.line + 1)
            _collect_lines(loader, value_node, here, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            here = index(path, i)
            lines.setdefault(here, child.start_mark.line + 1)
            _collect_lines(loader, child, here, lines, seen)
