"""Reading topology files into documents that remember where every value came from.

PyYAML's constructed data forgets positions, so each document is first composed to
nodes and a map from field path to line number is built beside the plain data. Errors
found long after parsing (the cross-reference checks) can then still say `file:line`.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml

from netlab.errors import TopologyError
from netlab.model import Source
from netlab.topology.safe_yaml import MAX_FILE_BYTES, Budget, YamlProblem, scalar_key
from netlab.topology.safe_yaml import documents as yaml_documents

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


def read_file(path: str, budget: Budget | None = None) -> list[Document]:
    """Every non-empty document in `path`, in order. Raises TopologyError on unreadable YAML.

    `budget` is shared by the files of one load, so aliases cannot multiply past the
    limit by spreading over several files.
    """
    text = _read_text(path)
    documents: list[Document] = []
    number = None
    try:
        for number, node, data in yaml_documents(text, budget or Budget()):
            if node is None or data is None:
                continue
            _reject_duplicate_keys(path, number, node)
            lines: dict[str, int] = {}
            _collect_lines(node, "", lines, set())
            lines[""] = node.start_mark.line + 1
            documents.append(Document(path, number, data, lines))
    except YamlProblem as e:
        raise TopologyError(path, e.document, "", e.problem, e.fix, e.line) from None
    except yaml.reader.ReaderError as e:
        raise _reader_error(path, text, e) from None
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(path, getattr(e, "netlab_document", number), text, e) from None
    except yaml.YAMLError as e:  # no other kind is raised today; kept so none can escape unlocated
        raise TopologyError(path, getattr(e, "netlab_document", number), "", f"the file is not valid YAML: {type(e).__name__}",
                            "fix the YAML syntax") from None
    return documents


def _read_text(path: str) -> str:
    """The file's text, read at most MAX_FILE_BYTES + 1 bytes deep.

    Opened non-blocking and checked with fstat, so a FIFO, /dev/zero or /dev/stdin is
    refused at once instead of hanging or filling memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TopologyError(path, None, "", "file not found",
                            "check the path (relative paths are taken from the current directory)") from None
    except IsADirectoryError:
        raise _directory(path) from None
    except OSError as e:
        raise TopologyError(path, None, "", f"cannot read the file: {e.strerror}",
                            "check that the file exists and is readable") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _directory(path)
        if not stat.S_ISREG(mode):
            raise TopologyError(path, None, "", "this is not a regular file (a device, pipe or socket)",
                                "save the topology to a file and name that file")
        raw = b""
        while len(raw) <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
    except OSError as e:
        raise TopologyError(path, None, "", f"cannot read the file: {e.strerror}",
                            "check that the file exists and is readable") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise TopologyError(path, None, "", f"the file is larger than {MAX_FILE_BYTES // 1024} KiB",
                            "split the topology into several files given together; no lab needs this much")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise TopologyError(path, None, "", f"the file is not UTF-8 text ({e.reason} at byte {e.start})",
                            "save the file as UTF-8", line) from None


def _directory(path: str) -> TopologyError:
    return TopologyError(path, None, "", "this is a directory, not a file",
                         "name the YAML files inside it, e.g. topologies/bookinfo.yaml")


def _reader_error(path: str, text: str, e: yaml.reader.ReaderError) -> TopologyError:
    """A character YAML forbids anywhere in a file, comments included (PyYAML names no file)."""
    position = max(0, min(e.position, len(text)))
    line = text.count("\n", 0, position) + 1
    char = e.character if isinstance(e.character, str) else chr(e.character or 0)
    return TopologyError(path, None, "",
                         f"character U+{ord(char):04X} (a control character) is not allowed in YAML, "
                         "not even in a comment",
                         f"delete it; to put it in a value, write it as an escape inside double quotes: "
                         f'"\\x{ord(char):02x}"', line)


def _syntax_error(path: str, number: int | None, text: str, e: yaml.MarkedYAMLError) -> TopologyError:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark else None
    problem = " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
    if isinstance(e, yaml.constructor.ConstructorError):
        return TopologyError(path, number, "", f"YAML value error: {problem}",
                             "write the value as plain text, a number, true/false, a list or a mapping; "
                             "Kubernetes YAML allows no other tags", line)
    if mark is not None and "\t" in _line_text(text, mark.line)[: mark.column + 1]:
        fix = "indent with spaces; YAML does not allow tabs for indentation"
    else:
        fix = (f"fix the YAML syntax near line {line}: check the indentation, that each key is "
               "followed by ': ' and that quotes and brackets are closed")
    return TopologyError(path, number, "", f"YAML syntax error: {problem}", fix, line)


def _line_text(text: str, line: int) -> str:
    lines = text.split("\n", line + 1)
    return lines[line] if line < len(lines) else ""


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


def _collect_lines(node: yaml.Node, path: str, lines: dict[str, int], seen: set[int]) -> None:
    """Record the line of each mapping key and sequence item (aliases are walked once).

    Depth is bounded by safe_yaml.MAX_DEPTH, so the recursion is too.
    """
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            here = join(path, scalar_key(key_node))
            lines.setdefault(here, key_node.start_mark.line + 1)
            _collect_lines(value_node, here, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            here = index(path, i)
            lines.setdefault(here, child.start_mark.line + 1)
            _collect_lines(child, here, lines, seen)
