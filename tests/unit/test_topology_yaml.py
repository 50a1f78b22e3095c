"""YAML hardening: hostile files give one located TopologyError, within a second and 100 MiB."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest

from netlab.errors import TopologyError
from netlab.topology import load
from netlab.topology import safe_yaml
from netlab.topology.documents import read_file

LAB = "apiVersion: netlab.dev/v1alpha1\nkind: Lab\nmetadata: {name: t}\nspec: {nodes: [{name: node-1}]}\n"


def alias_bomb(levels: int = 7) -> str:
    """The classic 'billion laughs': each level lists the previous one 9 times (9^levels values)."""
    lines = ['  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"  a{i}: &a{i} [{refs}]")
    return ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bomb}\n"
            "spec:\n" + "\n".join(lines) + "\n")


def refused(tmp_path: Path, text: str | bytes, name: str = "t.yaml") -> TopologyError:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load([str(path)])
    assert info.value.file == str(path), "the error names the real file, never <unicode string>"
    assert "<unicode string>" not in str(info.value)
    return info.value


def test_alias_bomb_refused_in_under_a_second_and_100_mib(tmp_path: Path) -> None:
    text = LAB + "---\n" + alias_bomb(7)
    assert len(text) < 3500  # a 3 KB file naming 9^7 = 4.8 million values
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(TopologyError) as info:
            load([str(path)])
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 100 * 2**20
    assert info.value.file == str(path) and info.value.document == 2 and info.value.line
    assert "alias" in info.value.problem


def test_alias_budget_is_shared_by_the_files_of_one_load(tmp_path: Path) -> None:
    """Spreading a bomb over several files must not multiply the budget."""
    per_file = safe_yaml.MAX_VALUES // 3 + 1000
    width = 100
    body = '["x"' + ',"x"' * (width - 1) + "]"
    rows = per_file // (width + 1)
    files = []
    for i in range(4):
        lines = [f"  r: &r {body}"] + [f"  k{j}: *r" for j in range(rows)]
        text = (LAB if i == 0 else "") + f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: n{i}}}\n" \
            "status:\n" + "\n".join(lines) + "\n"
        path = tmp_path / f"f{i}.yaml"
        path.write_text(text)
        files.append(str(path))
    with pytest.raises(TopologyError) as info:
        load(files)
    assert "alias" in info.value.problem


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    e = refused(tmp_path, LAB + "---\nspec: &a [*a]\n")
    assert "contains it" in e.problem and e.line == 6


@pytest.mark.parametrize("where", ["comment", "value", "key"])
def test_control_character_anywhere_is_located(tmp_path: Path, where: str) -> None:
    bad = {"comment": "# a \x01 comment\n", "value": "x: a\x07b\n", "key": "a\x1bb: 1\n"}[where]
    e = refused(tmp_path, LAB + bad)
    assert e.line == LAB.count("\n") + 1
    assert "control character" in e.problem and "U+00" in e.problem


@pytest.mark.parametrize("value", ["!!int abc", "!!bool maybe", "!!float x", "!!binary AAAA", "!!set {a}", "!!omap [a: 1]",
                                   "!custom x", "!!python/object:os.system x", ".inf", "!!int " + "9" * 5000,
                                   '"\\ud800"'])
def test_values_json_cannot_hold_are_located(tmp_path: Path, value: str) -> None:
    e = refused(tmp_path, LAB + f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {value}}}\n")
    assert e.document == 2 and e.line == LAB.count("\n") + 4


def test_deep_nesting_is_refused_before_recursion(tmp_path: Path) -> None:
    started = time.perf_counter()
    e = refused(tmp_path, LAB + "x: " + "[" * 200_000 + "\n")
    assert time.perf_counter() - started < 1.0
    assert f"deeper than {safe_yaml.MAX_DEPTH}" in e.problem


def test_block_nesting_is_refused_too(tmp_path: Path) -> None:
    text = LAB + "---\n" + "".join(" " * i + f"k{i}:\n" for i in range(300)) + " " * 300 + "v\n"
    assert f"deeper than {safe_yaml.MAX_DEPTH}" in refused(tmp_path, text).problem


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    depth = safe_yaml.MAX_DEPTH - 1
    path.write_text("x: " + "[" * depth + "]" * depth + "\n")
    value = read_file(str(path))[0].data["x"]
    for _ in range(depth - 1):
        value = value[0]
    assert value == []


def test_device_files_are_refused_at_once() -> None:
    for device in ("/dev/zero", "/dev/null", "/dev/urandom"):
        started = time.perf_counter()
        with pytest.raises(TopologyError) as info:
            load([device])
        assert time.perf_counter() - started < 1.0
        assert info.value.file == device and "not a regular file" in info.value.problem


def test_a_fifo_without_a_writer_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(TopologyError) as info:
        load([str(fifo)])
    assert "not a regular file" in info.value.problem


def test_huge_file_is_refused_unparsed(tmp_path: Path) -> None:
    text = LAB + "# padding\n" * (safe_yaml.MAX_FILE_BYTES // 10 + 1)
    started = time.perf_counter()
    e = refused(tmp_path, text)
    assert time.perf_counter() - started < 1.0
    assert "larger than" in e.problem


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    e = refused(tmp_path, LAB.encode() + b"x: \xff\n")
    assert "not UTF-8" in e.problem and e.line == LAB.count("\n") + 1


def test_tab_indentation_gets_its_hint(tmp_path: Path) -> None:
    e = refused(tmp_path, LAB + "x:\n\ty: 1\n")
    assert "tabs" in e.fix and e.line == LAB.count("\n") + 2


def test_kubernetes_conversions(tmp_path: Path) -> None:
    """Unquoted dates stay text and numeric keys become text, as sigs.k8s.io/yaml reads them."""
    path = tmp_path / "k.yaml"
    path.write_text("a: 2024-01-02\nb: {9080: x, true: y}\n")
    data = read_file(str(path))[0].data
    assert data == {"a": "2024-01-02", "b": {"9080": "x", "true": "y"}}


def test_every_example_fits_the_limits() -> None:
    repo = Path(__file__).resolve().parents[2]
    examples = sorted(repo.glob("topologies/*.yaml")) + sorted(repo.glob("netlab/labs/*/topology.yaml"))
    assert examples
    for example in examples:
        assert example.stat().st_size < safe_yaml.MAX_FILE_BYTES // 16
        started = time.perf_counter()
        load([str(example)])
        assert time.perf_counter() - started < 1.0


def test_the_largest_topology_within_the_limits_loads_and_plans_in_a_second(tmp_path: Path) -> None:
    """Without aliases, the value budget bounds the documents; their checks must stay linear."""
    from netlab.plan.planner import PlanOptions, plan

    pair = ("---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{i}}}\nspec:\n  replicas: {r}\n"
            "  selector: {{matchLabels: {{app: d{i}}}}}\n  template:\n    metadata: {{labels: {{app: d{i}}}}}\n"
            "    spec: {{containers: [{{name: c, image: netlab/http-echo, ports: [{{containerPort: 8080}}]}}]}}\n"
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\n"
            "spec: {{selector: {{app: d{i}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n")
    lab = LAB.replace("[{name: node-1}]", "[{name: node-1}, {name: node-2}]")
    loader = safe_yaml.KubeYamlLoader(pair.format(i=0, r=1))
    per_pair = 0
    while loader.check_node():
        per_pair += safe_yaml.expanded_size(loader.get_node(), safe_yaml.MAX_VALUES)
    count = (safe_yaml.MAX_VALUES - 100) // per_pair  # as many pairs as fit in the budget
    path = tmp_path / "big.yaml"
    path.write_text(lab + "".join(pair.format(i=i, r=1 if i < 250 else 0) for i in range(count)))
    started = time.process_time()
    plan(load([str(path)]), PlanOptions())
    assert count > 500 and time.process_time() - started < 1.0
