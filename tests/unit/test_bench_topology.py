"""The topology bench's own logic, without root: the lab it builds, what its client asks,
its per-pod arithmetic and how it reads PSS. The timings themselves live in `netlab bench`."""

from __future__ import annotations

import pytest

from netlab import mesh
from netlab.bench import memory
from netlab.bench import topology as bt
from netlab.errors import BenchError
from netlab.kernel.query import summarize
from netlab.plan.planner import PlanOptions, plan

SMAPS_ROLLUP = """55d0c0a00000-7ffd2a5f2000 ---p 00000000 00:00 0                          [rollup]
Rss:               11264 kB
Pss:                3127 kB
Pss_Dirty:          2400 kB
Pss_Anon:           2300 kB
Pss_File:            827 kB
Shared_Clean:       8000 kB
"""


def test_pss_is_the_pss_line_not_pss_dirty_or_rss() -> None:
    assert memory.parse_pss_kib(SMAPS_ROLLUP) == 3127


def test_pss_missing_is_an_error() -> None:
    with pytest.raises(ValueError):
        memory.parse_pss_kib("Rss: 100 kB\n")


def test_memory_figures_share_over_pods_and_servers() -> None:
    f = memory.figures([1000, 2000, 3000, 4000], [3000, 4000], pods=5)
    assert (f.processes, f.total_kib, f.per_pod_kib) == (4, 10000, 2000.0)
    assert (f.servers, f.server_kib, f.per_server_kib) == (2, 7000, 3500.0)
    assert f.as_dict()["per_server_mib"] == pytest.approx(3500 / 1024)


def test_per_pod_cost_and_deviation_from_the_reference() -> None:
    assert bt.per_pod_ms(3.0, 1.0, 200) == pytest.approx(20.0)
    devs = bt.deviations({50: 30.0, 200: 20.0, 1000: 16.0})
    assert devs == pytest.approx({50: 0.5, 200: 0.0, 1000: -0.2})
    assert bt.deviations({50: 1.0}) == {}  # no reference measured: nothing to compare


def test_ratio_says_how_many_times_faster() -> None:
    assert bt.ratio(12.0, 3.0) == 4.0


def test_split_is_even_and_complete() -> None:
    assert bt.split(100, 5) == [20] * 5
    assert bt.split(7, 5) == [2, 2, 1, 1, 1]
    assert sum(bt.split(1000, 5)) == 1000


def test_mesh_lab_has_the_issue_shape() -> None:
    lab = bt.mesh_lab("b1", "ambient", servers=100, pods=200, nodes=4)
    assert len(lab.nodes) == 4
    assert [n.name for n in lab.namespaces] == [f"bench-{i}" for i in range(5)]
    assert all(n.labels == {mesh.DATAPLANE_MODE_LABEL: "ambient"} for n in lab.namespaces)
    assert sum(d.replicas for d in lab.deployments) == 200
    echo = [d for d in lab.deployments if d.name == "echo"]
    assert [d.replicas for d in echo] == [20] * 5
    assert all(d.containers[0].image == "netlab/http-echo" for d in echo)
    assert len(lab.services) == 5
    assert [d.namespace for d in lab.deployments if d.name == "client"] == ["bench-0"]


def test_plain_lab_is_in_no_mesh_and_without_servers_has_no_client() -> None:
    lab = bt.mesh_lab("b1", "none", servers=0, pods=200, nodes=4)
    assert all(not n.labels for n in lab.namespaces)
    assert not lab.services
    assert all(d.name == "idle" for d in lab.deployments)
    assert sum(d.replicas for d in lab.deployments) == 200


def test_too_few_pods_for_the_servers_is_one_clear_error() -> None:
    with pytest.raises(BenchError, match="--pods"):
        bt.mesh_lab("b1", "ambient", servers=100, pods=100, nodes=4)


def test_thousand_pods_plan_within_the_nodes_pod_ranges() -> None:
    state = plan(bt.mesh_lab("b1", "ambient", servers=500, pods=1000, nodes=4),
                 PlanOptions(python="python3"))
    assert len(state.pods) == 1000
    assert all(p.mode == "ambient" for p in state.pods)


def test_client_asks_every_server_by_ip_and_every_service_by_name() -> None:
    state = plan(bt.mesh_lab("b1", "ambient", servers=10, pods=20, nodes=2), PlanOptions(python="python3"))
    targets = bt.probe_targets(summarize(state))
    servers = [p for p in state.pods if p.deployment == "echo"]
    by_ip = [t for t in targets if t["port"] == bt.ECHO_PORT]
    assert sorted(t["host"] for t in by_ip) == sorted(p.ip for p in servers)
    assert all(t["servers"] == [next(p.name for p in servers if p.ip == t["host"])] for t in by_ip)
    by_name = [t for t in targets if t["port"] == bt.SERVICE_PORT]
    assert sorted(t["host"] for t in by_name) == sorted(s.fqdn for s in state.services)
    assert all(len(t["servers"]) == 2 for t in by_name)  # 10 servers over 5 Services


def test_unknown_or_unbuilt_mesh_is_said_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    from netlab.plan import modes

    assert bt.mesh_unavailable("none") is None
    assert "unknown mesh" in (bt.mesh_unavailable("linkerd") or "")
    monkeypatch.setattr(modes, "REGISTRY", {k: v for k, v in modes.REGISTRY.items() if k != "sidecar"})
    assert "not built" in (bt.mesh_unavailable("sidecar") or "")
