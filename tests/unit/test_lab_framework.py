"""Lab framework without root: expectations judged on synthetic evidence, reports rendered."""

from __future__ import annotations

from netlab.labs import registry, report
from netlab.labs.framework import Expectation, Lab, Variant, VariantResult, evaluate
from netlab.labs.mirrord_ambient_steal import expectations as x
from netlab.labs.mirrord_ambient_steal.sequence import sequence
from netlab.plan.steal_rules import render_steal

TNS = "nl-t-pod-shop-target-0"


def _evidence(**over: object) -> dict:
    ev = {
        "pods": {"client": {"netns": "nl-t-pod-shop-client-0", "ip": "10.244.0.2", "name": "client-0"},
                 "target": {"netns": TNS, "ip": "10.244.1.2", "name": "target-0"}},
        "ports": {"app": 9080, "agent": 39080, "hbone": 15008},
        "mesh": {"client": True, "target": True},
        "client": {"argv": ["curl"], "exit_code": 28, "stdout": "", "http_code": "000",
                   "stderr": "curl: (28) Operation timed out"},
        "iptables": {"nat_output": ["-A OUTPUT -j MIRRORD_OUTPUT", "-A OUTPUT -j ISTIO_OUTPUT"],
                     "output_positions": {"MIRRORD_OUTPUT": 1, "ISTIO_OUTPUT": 2},
                     "excerpt": ["-A OUTPUT -j MIRRORD_OUTPUT"], "mirrord_rules": 5},
        "sysctl": {"net.ipv4.conf.all.route_localnet": "0"},
        "conntrack": [{"source": "conntrack", "kind": "ct_new", "netns": TNS, "proto": "tcp",
                       "saddr": "10.244.0.2", "sport": 5555, "daddr": "10.244.1.2", "dport": 9080,
                       "extra": {"reply": {"saddr": "127.0.0.1", "sport": 39080,
                                           "daddr": "10.244.0.2", "dport": 5555}}}],
        "events": [{"source": "bpf", "kind": "rx", "netns": TNS, "ifname": "lo", "proto": "tcp",
                    "saddr": "10.244.0.2", "sport": 5555, "daddr": "127.0.0.1", "dport": 39080,
                    "tcp_flags": "S", "ts_ns": 1},
                   {"source": "bpf", "kind": "tx", "netns": TNS, "ifname": "lo", "proto": "tcp",
                    "saddr": "10.244.0.2", "sport": 5555, "daddr": "127.0.0.1", "dport": 39080,
                    "tcp_flags": "S", "ts_ns": 2}],
        "drops": [],
        "counters": {"TcpExtListenDrops": 3, "IpOutNoRoutes": 3},
        "wire": {"hbone_to_target": 4, "plaintext_to_target": 0, "marker_seen": False,
                 "marker": "/p"},
        "agent": {"warnings": ["WARNING: route_localnet could not be set"], "mirrored": []},
    }
    ev.update(over)
    ev["events"] = list(ev["events"])
    ev["events"] += ev["conntrack"]
    return ev


def test_unprivileged_fix_judged_broken_from_kernel_evidence() -> None:
    v = registry.get("mirrord-ambient-steal").variant("fix-unprivileged")
    verdicts = evaluate(v, _evidence())
    assert all(d.held for d in verdicts), [(d.id, d.seen) for d in verdicts if not d.held]
    syn = next(d for d in verdicts if d.id == "syn-dies")
    assert "ListenDrops +3" in syn.seen and "0 SYN-ACK" in syn.seen


def test_failed_expectation_says_expected_and_seen() -> None:
    v = registry.get("mirrord-ambient-steal").variant("fix-3.113")
    verdicts = {d.id: d for d in evaluate(v, _evidence())}
    assert not verdicts["stolen"].held
    assert "curl exit 28" in verdicts["stolen"].seen
    assert verdicts["jump-first"].held
    assert not verdicts["route-localnet"].held and "read back" in verdicts["route-localnet"].seen


def test_missing_evidence_fails_instead_of_crashing() -> None:
    boom = Expectation("boom", "x", lambda ev: (ev["nope"]["deeper"], ""))
    (d,) = evaluate(Variant("v", "s", (boom,)), {})
    assert not d.held and "KeyError" in d.seen


def test_stolen_requires_the_marker_in_the_client_body() -> None:
    ok = {"client": {"exit_code": 0, "stdout": '{"body": "stolen-by-netlab-agent"}'}}
    app = {"client": {"exit_code": 0, "stdout": '{"server": "target-0"}'}}
    assert x.stolen(ok)[0] and not x.stolen(app)[0] and x.not_stolen(app)[0]


def test_sequence_collapses_retransmits_and_marks_the_listener_drop() -> None:
    ev = _evidence()
    ev["events"].insert(2, dict(ev["events"][1], ts_ns=3))
    steps = sequence(ev)
    redirected = [s for s in steps if "REDIRECTed" in s["label"]]
    assert redirected and redirected[0]["count"] == 2
    assert any(s["kind"] == "drop" and "ListenDrops +3" in s["label"] for s in steps)
    assert steps[-1]["kind"] == "result" and "curl exit 28" in steps[-1]["label"]


def _result(ok: bool = True) -> VariantResult:
    ev = _evidence()
    ev["sequence"] = sequence(ev)
    lab = registry.get("mirrord-ambient-steal")
    v = lab.variant("fix-unprivileged")
    return VariantResult(lab.name, v.name, v.summary, v.works, "t1", 1.0, evaluate(v, ev), ev)


def test_reports_render_self_contained() -> None:
    lab = registry.get("mirrord-ambient-steal")
    res = [_result()]
    md = report.markdown(lab, res)
    assert "fix-unprivileged: PASS" in md and "TcpExtListenDrops +3" in md
    page = report.html(lab, res)
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "src=" not in page and "<link" not in page


def test_render_steal_jump_position_matches_variants() -> None:
    assert "-A OUTPUT -j MIRRORD_OUTPUT" in render_steal(9080, 39080, 7777, output_jump_first=False)
    assert "-I OUTPUT 1 -j MIRRORD_OUTPUT" in render_steal(9080, 39080, 7777, output_jump_first=True)


def test_registry_and_explain() -> None:
    lab: Lab = registry.get("mirrord-ambient-steal")
    names = [v.name for v in lab.variants]
    assert names[0] == "baseline" and "fix-unprivileged" in names and len(names) == 7
    assert "route_localnet" in lab.explain()
