"""The mirrord lab's checks and flow on synthetic evidence (no root)."""

from __future__ import annotations

from netlab.labs import registry
from netlab.labs.framework import VariantResult, evaluate
from netlab.labs.mirrord_ambient_steal import expectations as x
from netlab.labs.mirrord_ambient_steal.sections import AGENT, APP, DECIDING_RULE, flow, sections
from netlab.labs.sections import Sequence, Text
from netlab.plan.steal_rules import render_steal

TNS, CNS = "nl-t-pod-shop.target-0", "nl-t-pod-shop.client-0"
ZT_SYN = {"source": "bpf", "kind": "tx", "netns": TNS, "ifname": "lo", "proto": "tcp",
          "saddr": "10.244.0.2", "sport": 5555, "daddr": "127.0.0.1", "dport": 39080,
          "tcp_flags": "S", "seq": 1000, "mark": 1337, "ts_ns": 1}
REDIRECT = {"source": "conntrack", "kind": "ct_new", "netns": TNS, "proto": "tcp",
            "saddr": "10.244.0.2", "sport": 5555, "daddr": "10.244.1.2", "dport": 9080,
            "extra": {"reply": {"saddr": "127.0.0.1", "sport": 39080, "daddr": "10.244.0.2",
                                "dport": 5555}}, "ts_ns": 9}


def _evidence(**over: object) -> dict:
    ev = {
        "pods": {"client": {"netns": CNS, "ip": "10.244.0.2", "name": "client-0", "node": "node-1"},
                 "target": {"netns": TNS, "ip": "10.244.1.2", "name": "target-0", "node": "node-2"}},
        "ports": {"app": 9080, "agent": 39080, "hbone": 15008, "outbound": 15001},
        "client": {"argv": ["curl"], "exit_code": 28, "stdout": "", "http_code": "000",
                   "stderr": "curl: (28) Operation timed out"},
        "iptables": {"nat_output": ["-A OUTPUT -j MIRRORD_OUTPUT", "-A OUTPUT -j ISTIO_OUTPUT"],
                     "output_positions": {"MIRRORD_OUTPUT": 1, "ISTIO_OUTPUT": 2},
                     "excerpt": ["-A OUTPUT -j MIRRORD_OUTPUT",
                                 f"-A ISTIO_OUTPUT {DECIDING_RULE}"], "mirrord_rules": 5},
        "sysctl": {"net.ipv4.conf.all.route_localnet": "0"},
        "conntrack": [REDIRECT],
        "events": [ZT_SYN, dict(ZT_SYN, kind="rx", ts_ns=2), dict(ZT_SYN, kind="rx", ts_ns=3),
                   REDIRECT],
        "drops": [],
        "counters": {"TcpExtListenDrops": 3, "IpOutNoRoutes": 3},
        "listeners": [{"netns": TNS, "addr": "0.0.0.0", "port": 9080, "pid": 1,
                       "process": "app/shop/target-0/target"},
                      {"netns": TNS, "addr": "0.0.0.0", "port": 39080, "pid": 2,
                       "process": "steal-agent"},
                      {"netns": TNS, "addr": "0.0.0.0", "port": 15008, "pid": 3,
                       "process": "ztunnel/node-2"}],
        "wire": {"hbone_to_target": 4, "plaintext_to_target": 0, "marker_seen": False,
                 "marker": "/p", "samples": []},
        "agent": {"warnings": ["WARNING: route_localnet could not be set"], "mirrored": [],
                  "log": []},
    }
    ev.update(over)
    return ev


def test_unprivileged_fix_shows_broken_from_kernel_evidence() -> None:
    v = registry.get("mirrord-ambient-steal").variant("fix-unprivileged")
    verdicts = evaluate(v, _evidence())
    assert all(d.held for d in verdicts), [(d.id, d.seen) for d in verdicts if not d.held]
    syn = next(d for d in verdicts if d.id == "syn-dies")
    assert "ListenDrops +3" in syn.seen and "0 SYN-ACK(s) answering" in syn.seen


def test_a_syn_ack_answering_the_syn_means_it_did_not_die() -> None:
    """Matched by sequence number: the agent's SYN-ACK leaves un-NATed as :9080."""
    ev = _evidence()
    ev["events"].append({"source": "bpf", "kind": "tx", "netns": TNS, "ifname": "lo",
                         "saddr": "10.244.1.2", "sport": 9080, "daddr": "10.244.0.2",
                         "dport": 5555, "tcp_flags": "SA", "ack": 1001, "ts_ns": 4})
    held, seen = x.syn_dies_at_agent(ev)
    assert not held and "1 SYN-ACK(s) answering" in seen


def test_failed_expectation_says_expected_and_seen() -> None:
    v = registry.get("mirrord-ambient-steal").variant("fix-3.113")
    verdicts = {d.id: d for d in evaluate(v, _evidence())}
    assert not verdicts["stolen"].held and "curl exit 28" in verdicts["stolen"].seen
    assert verdicts["jump-first"].held
    assert verdicts["redirect-loopback"].held
    assert "extra.reply.saddr=127.0.0.1" in verdicts["redirect-loopback"].seen
    assert not verdicts["route-localnet"].held and "read back" in verdicts["route-localnet"].seen


def test_no_redirect_needs_an_unredirected_entry_and_none_to_the_agent() -> None:
    direct = dict(REDIRECT, extra={"reply": {"saddr": "10.244.1.2", "sport": 9080}})
    assert x.no_redirect_to_agent(_evidence(conntrack=[direct]))[0]
    assert not x.no_redirect_to_agent(_evidence(conntrack=[direct, REDIRECT]))[0]
    assert not x.no_redirect_to_agent(_evidence(conntrack=[]))[0]


def test_stolen_requires_the_marker_in_the_client_body() -> None:
    ok = {"client": {"exit_code": 0, "stdout": '{"body": "stolen-by-netlab-agent"}'}}
    app = {"client": {"exit_code": 0, "stdout": '{"server": "target-0"}'},
           "pods": {"target": {"name": "target-0"}}}
    assert x.stolen(ok)[0] and not x.stolen(app)[0] and x.not_stolen(app)[0]
    assert x.app_answered(app)[0]


def test_flow_draws_the_agents_syn_ack_in_the_agents_lane() -> None:
    ev = _evidence()
    ev["events"] += [{"source": "bpf", "kind": "tx", "netns": TNS, "ifname": "lo",
                      "saddr": "10.244.1.2", "sport": 9080, "daddr": "10.244.0.2",
                      "dport": 5555, "tcp_flags": "SA", "mark": 0x111, "ts_ns": 5}]
    steps = flow(ev)
    synack = next(s for s in steps if s.label.startswith("SYN-ACK"))
    assert (synack.src, synack.dst) == (AGENT, "ztunnel node-2")  # not the app's lane
    assert "from 127.0.0.1:39080 (leaves as 10.244.1.2:9080)" in synack.label
    syn = next(s for s in steps if s.label.startswith("SYN for"))
    assert (syn.src, syn.dst) == ("ztunnel node-2", AGENT)  # ztunnel by its proxy mark
    assert APP not in {s.src for s in steps}


def test_flow_collapses_retransmits_and_marks_the_listener_drop() -> None:
    ev = _evidence()
    ev["events"].insert(1, dict(ZT_SYN, ts_ns=1))
    steps = flow(ev)
    redirected = [s for s in steps if "REDIRECTed" in s.label]
    assert redirected and redirected[0].count == 2
    assert any(s.kind == "drop" and "ListenDrops +3" in s.label for s in steps)
    assert steps[-1].kind == "result" and "curl exit 28" in steps[-1].label


def test_sections_highlight_the_deciding_rule() -> None:
    lab = registry.get("mirrord-ambient-steal")
    v = lab.variant("fix-unprivileged")
    ev = _evidence()
    r = VariantResult(lab.name, v.name, v.summary, v.outcome, "t", 1.0, evaluate(v, ev), ev)
    secs = list(sections(r))
    assert isinstance(secs[0], Sequence)
    rules = next(s for s in secs if isinstance(s, Text) and s.title.startswith("iptables"))
    marked = [line for line in rules.lines if rules.marked(line)]
    assert marked == [f"-A ISTIO_OUTPUT {DECIDING_RULE}"]


def test_render_steal_jump_position_matches_variants() -> None:
    assert "-A OUTPUT -j MIRRORD_OUTPUT" in render_steal(9080, 39080, 7777, output_jump_first=False)
    assert "-I OUTPUT 1 -j MIRRORD_OUTPUT" in render_steal(9080, 39080, 7777, output_jump_first=True)
