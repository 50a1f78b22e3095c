"""The config snapshot: JSON round trip by field name, and refusal of what does not fit."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from netlab import topology
from netlab.plan.options import PlanOptions
from netlab.plan.planner import plan
from netlab.snapshot import (Bootstrap, CertAuthority, DnsProxy, Endpoint, HttpRoute, Policy, ProxySnapshot,
                             Service, ServicePort, SnapshotError, Workload, from_json)

REPO = Path(__file__).resolve().parents[2]


def full_snapshot() -> ProxySnapshot:
    """Every field set, and none to its default, so a dropped field cannot go unnoticed."""
    w = Workload(namespace="bookinfo", name="ratings-0", service_account="bookinfo-ratings",
                 deployment="ratings", node="node-2", ip="10.244.1.2", netns="nl-x-pod-bookinfo-ratings-0",
                 labels={"app": "ratings", "version": "v1"}, annotations={"a/b": "c"},
                 images=("netlab/http-echo", "netlab/sleep"), host_veth="nlp3", mode="ambient",
                 tunnel=True, waypoint="waypoint.bookinfo.svc.lab.local")
    ep = Endpoint(pod="bookinfo/ratings-0", ip="10.244.1.2", port=9080)
    svc = Service(namespace="bookinfo", name="ratings", vip="10.96.0.11",
                  ports=(ServicePort(port=9080, name="http", protocol="SCTP", app_protocol="http",
                                     endpoints=(ep,)),),
                  domain="lab.local", waypoint="waypoint.bookinfo.svc.lab.local")
    pol = Policy(kind="AuthorizationPolicy", namespace="bookinfo", name="deny",
                 spec={"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["x"]}}]}]},
                 labels={"team": "a"})
    return ProxySnapshot(
        proxy="ztunnel", node="node-2", trust_domain="td.example", capture="tproxy",
        workdir="/run/netlab/x/ztunnel/node-2",
        ca=CertAuthority(url="https://172.18.0.1:15012", dir="/ca", root_cert="/ca/root-cert.pem"),
        bootstrap=Bootstrap(cert="/w/c.pem", key="/w/k.pem"),
        dns=DnsProxy(upstream="10.96.0.10:53", domain="lab.local", forward_in_pod=False),
        workloads=(w, dataclasses.replace(w, name="ratings-1", ip="10.244.1.3", mode="sidecar")),
        services=(svc,), policies=(pol,),
        routes=(HttpRoute(namespace="bookinfo", name="r", spec={"parentRefs": [{"name": "ratings"}]}),),
        waypoint="waypoint.bookinfo.svc.lab.local")


def field_names(obj: Any) -> set[str]:
    """Every dataclass field name reachable from `obj`, dotted by where it sits."""
    out: set[str] = set()
    for f in dataclasses.fields(obj):
        out.add(f"{type(obj).__name__}.{f.name}")
        value = getattr(obj, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if dataclasses.is_dataclass(item):
                out |= field_names(item)
    return out


def non_default_fields(obj: Any) -> list[str]:
    """Fields left at their default: the round trip would not prove they are carried."""
    left = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
                   else dataclasses.MISSING)
        if value == default:
            left.append(f"{type(obj).__name__}.{f.name}")
        for item in value if isinstance(value, tuple) else (value,):
            if dataclasses.is_dataclass(item):
                left += non_default_fields(item)
    return left


def test_every_field_survives_the_round_trip() -> None:
    snap = full_snapshot()
    assert non_default_fields(snap) == []
    text = snap.to_json()
    back = from_json(ProxySnapshot, text)
    assert back == snap
    assert isinstance(back.workloads, tuple) and isinstance(back.workloads[0].images, tuple)
    # Every field is in the JSON under its own name.
    raw = json.loads(text)
    assert set(raw) == {f.name for f in dataclasses.fields(ProxySnapshot)}
    assert set(raw["workloads"][0]) == {f.name for f in dataclasses.fields(Workload)}
    assert field_names(back) == field_names(snap)


def test_load_is_by_name_not_position(tmp_path: Path) -> None:
    snap = full_snapshot()

    def reverse(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reverse(v) for v in value]
        return value

    shuffled = json.dumps(reverse(json.loads(snap.to_json())))
    path = tmp_path / "z.json"
    path.write_text(shuffled)
    assert ProxySnapshot.load(str(path)) == snap


def test_defaults_fill_keys_left_out() -> None:
    raw = json.loads(full_snapshot().to_json())
    del raw["workloads"][0]["tunnel"], raw["policies"]
    back = from_json(ProxySnapshot, json.dumps(raw))
    assert back.workloads[0].tunnel is False and back.policies == ()


@pytest.mark.parametrize("change,says", [
    (lambda r: r["workloads"][0].update(in_mesh=True), "workloads[0]: unknown key(s) in_mesh"),
    (lambda r: r.pop("node"), "missing key(s) node"),
    (lambda r: r["services"][0]["ports"][0].update(port="9080"), "ports[0].port: expected int"),
    (lambda r: r.update(capture="ebpf"), "capture: 'ebpf' is not one of"),
    (lambda r: r["workloads"][0].update(tunnel=1), "tunnel: expected bool"),
    (lambda r: r["dns"].update(upstream=None), None),  # Optional: None is fine
])
def test_load_refuses_what_does_not_fit(change: Any, says: str | None) -> None:
    raw = json.loads(full_snapshot().to_json())
    change(raw)
    if says is None:
        assert from_json(ProxySnapshot, json.dumps(raw)).dns.upstream is None
        return
    with pytest.raises(SnapshotError) as e:
        from_json(ProxySnapshot, json.dumps(raw))
    assert says in str(e.value)


def test_the_planned_snapshot_loads_back_into_the_planners_objects(tmp_path: Path) -> None:
    lab = topology.load([str(REPO / "topologies" / "ambient-bookinfo.yaml")])
    state = plan(lab, PlanOptions(python="python3"))
    z = next(p for p in state.processes if p.name.startswith("ztunnel/"))
    assert z.config is not None
    snap = from_json(ProxySnapshot, z.config)
    assert list(snap.workloads) == state.pods and list(snap.services) == state.services


def test_workload_identity_and_lookups() -> None:
    snap = full_snapshot()
    w = snap.workloads[0]
    assert w.identity("td.example") == "spiffe://td.example/ns/bookinfo/sa/bookinfo-ratings"
    assert snap.workload_by_ip("10.244.1.3") == snap.workloads[1]
    hit = snap.service_at("10.96.0.11", 9080)
    assert hit is not None and hit[0].fqdn == "ratings.bookinfo.svc.lab.local"
    assert snap.service_at("10.96.0.11", 9081) is None
    assert snap.inbound_service(w, 9080) == snap.services[0]
    assert snap.local_workloads("ambient") == [w]
    assert typing.get_type_hints(ProxySnapshot)["capture"] is not None
