"""Placing conntrack and nftrace events at their packets, without root: events shaped
like the collectors' output, read late as they are in a real trace."""

from __future__ import annotations

from netlab.observe.events import Event
from netlab.observe.order import place

POD = 4026530001
APP = ("10.244.0.2", 37982, "10.244.1.2", 9080)
REDIRECTED = ("10.244.0.2", 37982, "127.0.0.1", 15001)


def pkt(ts: int, kind: str, t: tuple[str, int, str, int], ifname: str, flags: str = "S",
        ip_id: int = 52889) -> Event:
    return Event(ts_ns=ts, source="bpf", kind=kind, netns_inode=POD, netns="pod", ifname=ifname,
                 proto="tcp", saddr=t[0], sport=t[1], daddr=t[2], dport=t[3], tcp_flags=flags,
                 seq=1, extra={"ip_id": ip_id})


def nf(read: int, t: tuple[str, int, str, int], chain: str, rule: str, *, inp: str | None = None,
       out: str | None = None, flags: str = "S", ip_id: int | None = 52889) -> Event:
    extra: dict[str, object] = {"chain": chain, "rule": rule, "ts_from": "read", "read_ns": read}
    if ip_id is not None:
        extra["ip_id"] = ip_id
    if inp:
        extra["in"] = inp
    if out:
        extra["out"] = out
    return Event(ts_ns=read, source="nftrace", kind="nf_rule", netns_inode=POD, netns="pod",
                 ifname=inp or out, proto="tcp", saddr=t[0], sport=t[1], daddr=t[2], dport=t[3],
                 tcp_flags=flags, extra=extra)


def test_redirect_comes_before_the_handshake_it_rewrote() -> None:
    """Read 11 ms late, the REDIRECT (OUTPUT, pre-NAT tuple) goes right before the SYN
    leaves on lo (post-NAT tuple), PREROUTING on lo right after it arrives."""
    syn_tx = pkt(1_000, "tx", REDIRECTED, "lo")
    syn_rx = pkt(1_012, "rx", REDIRECTED, "lo")
    synack = pkt(1_059, "tx", REDIRECTED[2:] + REDIRECTED[:2], "lo", flags="SA", ip_id=0)
    redirect = nf(12_000_000, APP, "ISTIO_OUTPUT", "-j REDIRECT --to-ports 15001", out="eth0")
    prerouting = nf(12_000_100, REDIRECTED, "PREROUTING", "-j ISTIO_PRERT", inp="lo")
    evs = place([synack, prerouting, syn_rx, redirect, syn_tx])
    order = [e.extra.get("chain") or e.kind for e in evs]
    assert order == ["ISTIO_OUTPUT", "tx", "rx", "PREROUTING", "tx"], order
    assert redirect.extra["ts_from"] == "packet" and redirect.extra["read_ns"] == 12_000_000


def test_packets_bpf_does_not_send_keep_their_netns_order() -> None:
    """A data segment's rules (no BPF event to tie to) follow the last placed packet,
    read-time minus the netns' measured delay, and never jump ahead of the next one."""
    syn_tx = pkt(1_000, "tx", REDIRECTED, "lo")
    fin_tx = pkt(50_000, "tx", REDIRECTED, "lo", flags="FA", ip_id=7)
    a = nf(11_000, APP, "OUTPUT", "-j ISTIO_OUTPUT", out="eth0")
    data = nf(30_000, APP, "OUTPUT", "-j ISTIO_OUTPUT", out="eth0", flags="PA", ip_id=5)
    fin = nf(60_000, APP, "OUTPUT", "-j ISTIO_OUTPUT", out="eth0", flags="FA", ip_id=7)
    place([syn_tx, fin_tx, a, data, fin])
    assert a.ts_ns < syn_tx.ts_ns < data.ts_ns < fin.ts_ns < fin_tx.ts_ns
    assert data.extra["ts_from"] == "estimated"
    assert data.ts_ns == 30_000 - 10_001  # the delay measured on `a` and `fin`, median


def test_conntrack_without_kernel_stamp_goes_to_its_first_packet() -> None:
    syn_tx = pkt(1_000, "tx", REDIRECTED, "lo")
    ct = Event(ts_ns=40_000_000, source="conntrack", kind="ct_new", netns_inode=POD, netns="pod",
               proto="tcp", saddr=APP[0], sport=APP[1], daddr=APP[2], dport=APP[3],
               extra={"ts_from": "read", "reply": {"proto": "tcp", "saddr": "127.0.0.1",
                                                   "sport": 15001, "daddr": APP[0],
                                                   "dport": APP[1]}})
    stamped = Event(ts_ns=900, source="conntrack", kind="ct_new", netns_inode=POD, netns="pod",
                    proto="udp", saddr="10.244.0.2", sport=5353, daddr="10.96.0.10", dport=53,
                    extra={"ts_from": "kernel"})
    evs = place([ct, syn_tx, stamped])
    assert [e.kind for e in evs] == ["ct_new", "ct_new", "tx"]
    assert ct.ts_ns == 999 and ct.extra["ts_from"] == "packet"
    assert stamped.ts_ns == 900  # a kernel stamp is never moved
