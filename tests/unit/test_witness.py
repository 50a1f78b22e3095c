"""Witness readers on captured text and synthetic events (no root): iptables-save, SNMP,
and which socket really sent a packet seen after NAT."""

from __future__ import annotations

from netlab.observe.witness import iptables, snmp
from netlab.observe.witness.sockets import through_nat

SAVE = """*mangle
:PREROUTING ACCEPT [0:0]
COMMIT
*nat
:OUTPUT ACCEPT [0:0]
-A PREROUTING -j ISTIO_PRERT
-A OUTPUT -j ISTIO_OUTPUT
-A OUTPUT -j MIRRORD_OUTPUT
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT
-A MIRRORD_OUTPUT -o lo -p tcp -m tcp --dport 9080 -j REDIRECT --to-ports 39080
COMMIT"""


def test_iptables_table_chain_positions_excerpt() -> None:
    nat = iptables.table(SAVE, "nat")
    assert nat[0] == "*nat" and nat[-1] == "COMMIT" and "*mangle" not in nat
    out = iptables.chain(nat, "OUTPUT")
    assert out == ["-A OUTPUT -j ISTIO_OUTPUT", "-A OUTPUT -j MIRRORD_OUTPUT"]
    assert iptables.positions(out) == {"ISTIO_OUTPUT": 1, "MIRRORD_OUTPUT": 2}
    assert iptables.excerpt(nat, ("MIRRORD_",)) == [nat[-2]]
    assert iptables.table(SAVE, "raw") == []


def test_snmp_parse_and_delta() -> None:
    text = ("Ip: Forwarding InReceives OutNoRoutes\nIp: 1 10 0\n"
            "TcpExt: ListenDrops SyncookiesSent\nTcpExt: 0 0\n")
    before = snmp.parse(text)
    assert before == {"IpForwarding": 1, "IpInReceives": 10, "IpOutNoRoutes": 0,
                      "TcpExtListenDrops": 0, "TcpExtSyncookiesSent": 0}
    after = dict(before, IpInReceives=13, TcpExtListenDrops=3)
    assert snmp.delta(before, after) == {"IpInReceives": 3, "TcpExtListenDrops": 3}
    assert snmp.delta(before, after, ["IpOutNoRoutes", "TcpExtListenDrops"]) == {
        "IpOutNoRoutes": 0, "TcpExtListenDrops": 3}


def _ct(netns: str, orig: tuple, reply: tuple) -> dict:
    return {"netns": netns, "saddr": orig[0], "sport": orig[1], "daddr": orig[2],
            "dport": orig[3], "extra": {"reply": {"saddr": reply[0], "sport": reply[1],
                                                  "daddr": reply[2], "dport": reply[3]}}}


def test_a_redirected_reply_is_sent_by_the_socket_that_answered() -> None:
    # ztunnel 10.0.0.2:5555 -> pod:9080, REDIRECTed to the agent on 127.0.0.1:39080.
    cts = [_ct("pod", ("10.0.0.2", 5555, "10.0.1.2", 9080), ("127.0.0.1", 39080, "10.0.0.2", 5555))]
    synack = {"netns": "pod", "saddr": "10.0.1.2", "sport": 9080, "daddr": "10.0.0.2",
              "dport": 5555}
    sender, receiver = through_nat(synack, cts)
    assert sender == ("pod", "127.0.0.1", 39080)  # not the app's :9080
    assert receiver == ("pod", "10.0.0.2", 5555)
    syn = {"netns": "pod", "saddr": "10.0.0.2", "sport": 5555, "daddr": "10.0.1.2", "dport": 9080}
    assert through_nat(syn, cts) == (("pod", "10.0.0.2", 5555), ("pod", "127.0.0.1", 39080))
    # No NAT entry: the packet's own addresses.
    assert through_nat(syn, []) == (("pod", "10.0.0.2", 5555), ("pod", "10.0.1.2", 9080))


def test_nat_hops_chain_from_a_service_vip_to_the_agent() -> None:
    cts = [_ct("node-1", ("10.0.0.3", 7000, "10.96.0.11", 9080), ("10.0.1.2", 9080, "10.0.0.3", 7000)),
           _ct("pod", ("10.0.0.3", 7000, "10.0.1.2", 9080), ("10.0.1.2", 39080, "10.0.0.3", 7000))]
    syn = {"netns": "client", "saddr": "10.0.0.3", "sport": 7000, "daddr": "10.96.0.11",
           "dport": 9080}
    assert through_nat(syn, cts)[1] == ("pod", "10.0.1.2", 39080)


def test_senders_name_processes_by_listener_opener_and_proxy_mark() -> None:
    from netlab.observe.witness.sockets import Senders

    cts = [_ct("pod", ("10.0.0.2", 5555, "10.0.1.2", 9080), ("127.0.0.1", 39080, "10.0.0.2", 5555))]
    senders = Senders([{"netns": "pod", "port": 39080, "process": "agent"},
                       {"netns": "pod", "port": 9080, "process": "app"}], cts,
                      {"10.0.1.2": "pod"}, {"pod": "ztunnel/node-2"})
    syn = {"netns": "pod", "saddr": "10.0.0.2", "sport": 5555, "daddr": "127.0.0.1",
           "dport": 39080, "tcp_flags": "S", "mark": 0x539}
    who = senders.attribute(syn)
    assert (who.sender, who.receiver) == ("ztunnel/node-2", "agent")  # by mark, by listener
    synack = {"netns": "pod", "saddr": "10.0.1.2", "sport": 9080, "daddr": "10.0.0.2",
              "dport": 5555, "tcp_flags": "SA", "mark": 0x111}
    who = senders.attribute(synack)
    assert (who.sender, who.receiver) == ("agent", "ztunnel/node-2")  # not "app"
    assert who.sent_by == ("pod", "127.0.0.1", 39080)
    stranger = dict(syn, sport=6666, mark=0)
    assert senders.attribute(stranger).sender is None  # for the lab to name
