"""The package's import graph keeps the shape docs/architecture.md describes.

Walks every module's imports with `ast` (including imports inside functions, which
are still arrows between rooms) and fails on an import circle, on an arrow from a
lower layer up into a higher one, and on click or rich outside the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "netlab"

# Lower number = lower layer. A module may import from its own layer or lower ones.
# Keep in step with the table in docs/architecture.md.
LAYERS: dict[str, int] = {
    "netlab": 0,  # the package itself (__init__)
    "netlab.errors": 0,
    "netlab.mesh": 0,
    "netlab.model": 0,
    "netlab.snapshot": 0,
    "netlab.xds": 0,
    "netlab.readiness": 0,
    "netlab.schema": 0,
    "netlab.topology": 1,
    "netlab.plan": 2,
    "netlab.kernel": 3,
    "netlab.dataplane": 4,
    "netlab.observe": 5,
    "netlab.telemetry": 6,
    "netlab.labs": 7,
    "netlab.bench": 7,
    "netlab.cli": 8,
}

# click and rich draw the command line; the lab report renderer may use rich's tables.
UI_LIBRARIES = ("click", "rich")
UI_ALLOWED = ("netlab.cli", "netlab.labs.report")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under `if TYPE_CHECKING:`: names for the type checker, not
    imports that run, so they make no circle (they still count as arrows between layers)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(name: str, path: Path, runtime_only: bool = False,
               known: frozenset[str] = frozenset()) -> set[str]:
    """Every module `name` imports, absolute, resolved from relative forms.

    `from pkg import sub` where `pkg.sub` is a module in `known` is an import of the
    submodule alone: Python runs `pkg/__init__` first either way, but the arrow the
    author drew points at `sub`.
    """
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree) if runtime_only else set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{alias.name}" for alias in node.names}
            if known and subs <= known:
                out.update(subs)  # `from netlab.plan import naming`: the submodule
            else:
                out.add(base)
                out.update(subs & known if known else subs)
    return out


def internal_graph(runtime_only: bool = False) -> dict[str, set[str]]:
    mods = modules()
    known = frozenset(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        graph[name] = {m for m in imports_of(name, path, runtime_only, known)
                       if m in mods and m != name}
    return graph


def layer_of(module: str) -> tuple[str, int]:
    """The most specific LAYERS entry that owns `module`."""
    best = max((room for room in LAYERS if module == room or module.startswith(room + ".")),
               key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add its room to LAYERS and to "
                             "docs/architecture.md")
    return best, LAYERS[best]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path a → b → … → a, or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_import_circle() -> None:
    cycle = find_cycle(internal_graph(runtime_only=True))
    assert cycle is None, "import circle: " + " → ".join(cycle or [])


def test_no_arrow_up_the_layers() -> None:
    bad = []
    for src, targets in internal_graph().items():
        src_room, src_layer = layer_of(src)
        for dst in sorted(targets):
            dst_room, dst_layer = layer_of(dst)
            # A package's __init__ importing its own parent package is not an arrow up.
            if dst_layer > src_layer:
                bad.append(f"{src} ({src_room}, layer {src_layer}) imports {dst} "
                           f"({dst_room}, layer {dst_layer})")
    assert not bad, "imports from a lower layer into a higher one:\n" + "\n".join(bad)


def test_click_and_rich_only_in_the_command_line() -> None:
    bad = []
    for name, path in modules().items():
        if any(name == a or name.startswith(a + ".") for a in UI_ALLOWED):
            continue
        used = {m.split(".")[0] for m in imports_of(name, path)} & set(UI_LIBRARIES)
        if used:
            bad.append(f"{name} imports {', '.join(sorted(used))}")
    assert not bad, "click/rich outside netlab/cli/:\n" + "\n".join(bad)


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_cycle_finder_finds_circles(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    """The walker itself can fail: a known circle is found, a chain is not one."""
    assert find_cycle(graph) == expected


def test_relative_imports_resolve(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    f = pkg / "mod.py"
    f.write_text("from . import sib\nfrom ..top import x\nimport os\n")
    got = imports_of("netlab.plan.mod", f)
    assert {"netlab.plan", "netlab.plan.sib", "netlab.top", "netlab.top.x", "os"} <= got
    known = frozenset({"netlab.plan.sib", "netlab.top"})
    got = imports_of("netlab.plan.mod", f, known=known)
    assert "netlab.plan.sib" in got and "netlab.plan" not in got  # the submodule alone
    assert "netlab.top" in got  # `x` is a name in netlab.top, not a module


def test_type_checking_imports_make_no_circle(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from netlab.a import B\n")
    assert "netlab.a" in imports_of("netlab.m", f)
    assert "netlab.a" not in imports_of("netlab.m", f, runtime_only=True)
