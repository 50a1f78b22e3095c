"""Timeline joining, without root: hand-built events shaped like the collectors' output."""

from __future__ import annotations

import json

from netlab.observe.events import Event
from netlab.observe.timeline import build_timelines, find, flow_key, render_text

APP, POD = 4026530001, 4026530002


def ev(ts: int, kind: str, ns: int, name: str, t: tuple[str, int, str, int], *,
       source: str = "bpf", flags: str | None = None, seq: int | None = None,
       reason: str | None = None, ifname: str | None = "eth0", **extra: object) -> Event:
    return Event(ts_ns=ts, source=source, kind=kind, netns_inode=ns, netns=name,
                 ifname=ifname, proto="tcp", saddr=t[0], sport=t[1], daddr=t[2], dport=t[3],
                 tcp_flags=flags, seq=seq, reason=reason, extra=dict(extra))


def test_dnat_joins_vip_tuple_to_pod_tuple() -> None:
    to_vip = ("10.0.0.5", 40000, "10.96.0.10", 80)
    to_pod = ("10.0.0.5", 40000, "10.244.1.7", 8080)
    events = [
        ev(1, "tx", APP, "app", to_vip, flags="S", seq=7),
        ev(2, "ct_new", APP, "app", to_vip, source="conntrack", ifname=None,
           reply={"proto": "tcp", "saddr": "10.244.1.7", "sport": 8080,
                  "daddr": "10.0.0.5", "dport": 40000}),
        ev(3, "rx", POD, "pod", to_pod, flags="S", seq=7),
        ev(4, "tx", POD, "pod", to_pod[2:] + to_pod[:2], flags="SA", seq=99),
        ev(5, "tx", APP, "other", ("10.0.0.5", 40001, "10.96.0.10", 80), flags="S", seq=1),
    ]
    tls = build_timelines(events)
    assert len(tls) == 2
    tl = find(tls, dport=8080)[0]
    assert tl.client == {"proto": "tcp", "saddr": "10.0.0.5", "sport": 40000,
                         "daddr": "10.96.0.10", "dport": 80}
    assert [h.ts_ns for h in tl.hops] == [1, 2, 3, 4]
    assert {"proto": "tcp", "saddr": "10.0.0.5", "sport": 40000, "daddr": "10.244.1.7",
            "dport": 8080} in tl.tuples
    assert tl.conntrack[0]["reply"]["sport"] == 8080
    json.loads(tl.to_json())  # serialisable


def test_redirect_to_loopback_is_scoped_by_netns() -> None:
    """Two pods redirected to 127.0.0.1:15001 with the same tuple are two flows."""
    tup = ("10.0.0.5", 40000, "127.0.0.1", 15001)
    a = ev(1, "rx", APP, "app", tup, flags="S", seq=1, ifname="lo")
    b = ev(2, "rx", POD, "pod", tup, flags="S", seq=2, ifname="lo")
    assert flow_key("tcp", *tup, APP) != flow_key("tcp", *tup, POD)
    assert len(build_timelines([a, b])) == 2
    # ...while the same public tuple in two netns is one flow crossing a veth.
    pub = ("10.0.0.5", 40000, "10.0.0.9", 80)
    assert flow_key("tcp", *pub, APP) == flow_key("tcp", *pub, POD)


def test_redirect_joins_via_reply_tuple() -> None:
    dialled = ("10.0.0.5", 40000, "10.0.0.9", 80)
    events = [
        ev(1, "tx", APP, "app", dialled, flags="S", seq=1, ifname="lo"),
        ev(2, "ct_new", APP, "app", dialled, source="conntrack", ifname=None,
           reply={"proto": "tcp", "saddr": "127.0.0.1", "sport": 15001,
                  "daddr": "10.0.0.5", "dport": 40000}),
        ev(3, "rx", APP, "app", ("10.0.0.5", 40000, "127.0.0.1", 15001), flags="S", seq=1,
           ifname="lo"),
    ]
    tls = build_timelines(events)
    assert len(tls) == 1 and len(tls[0].hops) == 3


def test_first_drop_retransmissions_and_resets() -> None:
    t = ("10.250.0.1", 5555, "10.250.0.2", 7002)
    back = t[2:] + t[:2]
    events = [
        ev(10, "tx", 1, "client", t, flags="S", seq=42),
        ev(11, "drop", 2, "server", t, flags="S", seq=42, reason="NETFILTER_DROP",
           location="nft_do_chain+0x3e8"),
        ev(1010, "tx", 1, "client", t, flags="S", seq=42),
        ev(1011, "drop", 2, "server", t, flags="S", seq=42, reason="NETFILTER_DROP"),
        ev(1012, "retransmit_synack", 2, "server", back, ifname=None),
        ev(1013, "send_reset", 2, "server", back, flags="R"),
        ev(1014, "tx", 1, "client", t, flags="A", seq=43),
        ev(1015, "tx", 1, "client", t, flags="A", seq=43),  # pure ACKs repeat: fine
    ]
    tl = build_timelines(reversed(events))[0]  # arrival order does not matter
    assert tl.first_drop is not None
    assert (tl.first_drop["ts_ns"], tl.first_drop["netns"], tl.first_drop["reason"]) == \
        (11, "server", "NETFILTER_DROP")
    assert tl.first_drop["location"] == "nft_do_chain+0x3e8"
    kinds = sorted((r["kind"], r.get("seen_as")) for r in tl.retransmissions)
    assert kinds == [("retransmit", "drop"), ("retransmit", "tx"), ("retransmit_synack", None)]
    assert len(tl.resets) == 1  # a send_reset whose packet was not seen is still one reset
    assert [h["kind"] for h in tl.resets[0]["hops"]] == ["send_reset"]
    text = render_text(tl)
    assert "FIRST DROP in server/eth0: NETFILTER_DROP" in text
    assert "retransmissions: 3" in text


def test_events_without_tuple_or_port_are_left_out() -> None:
    arp = Event(ts_ns=1, source="bpf", kind="rx", netns_inode=1, ifname="eth0",
                extra={"ethertype": "arp"})
    unbound = ev(2, "sock_state", 1, "c", ("10.0.0.1", 0, "10.0.0.2", 80), ifname=None)
    assert build_timelines([arp, unbound]) == []


def test_nftrace_verdicts_land_in_the_flow() -> None:
    t = ("10.250.0.1", 5555, "10.250.0.2", 7002)
    events = [
        ev(1, "nf_rule", 2, "server", t, source="nftrace", flags="S", table="filter",
           chain="INPUT", verdict="DROP", rule="-t filter -A INPUT -p tcp -j DROP"),
    ]
    tl = build_timelines(events)[0]
    assert tl.nf_verdicts[0]["verdict"] == "DROP"
    assert tl.nf_verdicts[0]["rule"] == "-t filter -A INPUT -p tcp -j DROP"
    assert tl.hops[0].detail["chain"] == "INPUT"


def test_one_rst_is_counted_once_with_its_hops() -> None:
    """A RST crossing four interfaces is one reset with five hops, not five resets."""
    t = ("10.244.0.2", 40000, "10.244.1.2", 9080)
    back = t[2:] + t[:2]
    events = [
        ev(1, "send_reset", 2, "server", back, flags="R", ifname=None),
        ev(2, "tx", 2, "server", back, flags="R", seq=77),
        ev(3, "rx", 3, "node-2", back, flags="R", seq=77, ifname="nlp0"),
        ev(4, "tx", 3, "node-2", back, flags="R", seq=77),
        ev(5, "rx", 1, "client", back, flags="R", seq=77),
        ev(6, "recv_reset", 1, "client", t, ifname=None),
    ]
    tl = build_timelines(events)[0]
    assert len(tl.resets) == 1
    r = tl.resets[0]
    assert (r["sent_by"], r["received_by"], r["seq"]) == ("server", "client", 77)
    assert [(h["netns"], h["kind"]) for h in r["hops"]] == [
        ("server", "send_reset"), ("server", "tx"), ("node-2", "rx"), ("node-2", "tx"),
        ("client", "rx"), ("client", "recv_reset")]


def test_promiscuous_bridge_copy_is_not_a_drop() -> None:
    """br0 (promiscuous for a capture) frees its own copy as OTHERHOST while the frame
    goes on through the bridge: not a drop. The same drop with the packet never seen
    again is one."""
    t = ("10.244.0.2", 43156, "10.244.1.2", 15008)
    fabric, node2 = 5, 6
    copy = ev(2, "drop", fabric, "fabric", t, flags="S", seq=9, reason="OTHERHOST",
              ifname="br0", ip_id=11)
    went_on = [ev(1, "rx", fabric, "fabric", t, flags="S", seq=9, ifname="br0", ip_id=11),
               ev(3, "rx", node2, "node-2", t, flags="S", seq=9, ifname="eth0", ip_id=11)]
    tl = build_timelines([copy, *went_on])[0]
    assert tl.first_drop is None and tl.drops == []
    assert "promiscuous" in tl.hops[1].detail["not_on_path"]
    lost = build_timelines([copy, went_on[0]])[0]
    assert lost.first_drop is not None and lost.first_drop["reason"] == "OTHERHOST"


def test_otherhost_on_a_bridge_device_is_a_copy_even_unseen_later() -> None:
    """A data segment or ACK is not sent at forwarding hops, so its going on is never
    seen; on a bridge device the kernel's own rule says it was a copy."""
    t = ("10.244.0.2", 43156, "10.244.1.2", 15008)
    ack = ev(5, "drop", 5, "fabric", t, flags="A", seq=10, reason="OTHERHOST", ifname="br0",
             dev_kind="bridge")
    tl = build_timelines([ack])[0]
    assert tl.first_drop is None and "bridge" in tl.hops[0].detail["not_on_path"]
