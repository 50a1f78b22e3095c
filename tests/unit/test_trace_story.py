"""Proxy access logs as trace events, and one story per user connection, without root.

The log lines come from netlab's own writers of ztunnel's and Envoy's formats (which are
tested against the upstream formats elsewhere), so a change to either format breaks
these tests instead of silently breaking the join. The packets are shaped like the
collectors' output for one ambient call across two nodes.
"""

from __future__ import annotations

import io
import time

from netlab.dataplane.envoy.accesslog import AccessEntry, text_line
from netlab.dataplane.telemetry import ConnRecord, ZtunnelTelemetry, denied_by, rejection_error
from netlab.observe import proxylog
from netlab.observe.events import Event
from netlab.observe.story import LabView, build_stories
from netlab.observe.story_text import render_story
from netlab.observe.timeline import build_timelines
from netlab.snapshot import Workload

SLEEP = Workload("bookinfo", "sleep-0", "sleep", "sleep", "node-1", "10.244.0.2", "nl-l-pod-s")
RATINGS = Workload("bookinfo", "ratings-0", "ratings", "ratings", "node-2", "10.244.1.2",
                   "nl-l-pod-r")
SUMMARY = {
    "lab": "l", "dns": "10.96.0.10",
    "nodes": [{"name": "node-1", "netns": "nl-l-node-1"}, {"name": "node-2", "netns": "nl-l-node-2"}],
    "pods": [{"namespace": "bookinfo", "name": "sleep-0", "node": "node-1", "ip": SLEEP.ip,
              "netns": SLEEP.netns, "mode": "ambient"},
             {"namespace": "bookinfo", "name": "ratings-0", "node": "node-2", "ip": RATINGS.ip,
              "netns": RATINGS.netns, "mode": "ambient"},
             {"namespace": "bookinfo", "name": "other-0", "node": "node-1", "ip": "10.244.0.9",
              "netns": "nl-l-pod-x", "mode": "ambient"}],
    "services": [],
}
S_NS, R_NS, N1, N2 = 11, 12, 21, 22
APP_PORT, HB_PORT, UP_PORT, DNS_PORT = 37982, 43156, 38487, 5353


def _ztunnel_lines(rec: ConnRecord, error: str | None = None) -> list[str]:
    buf = io.StringIO()
    ZtunnelTelemetry("node", buf).closed(rec, 79, 326, error=error)
    return buf.getvalue().splitlines()


def _record(reporter: str, src_addr: str) -> ConnRecord:
    return ConnRecord(reporter=reporter, src=SLEEP, dst=RATINGS, src_addr=src_addr,  # type: ignore[arg-type]
                      dst_addr=f"{RATINGS.ip}:15008", hbone_addr=f"{RATINGS.ip}:9080",
                      src_identity="spiffe://cluster.local/ns/bookinfo/sa/sleep",
                      dst_identity="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings",
                      security="mutual_tls",
                      direction="outbound" if reporter == "source" else "inbound")


def test_ztunnel_denial_names_the_policy() -> None:
    rec = _record("destination", f"{SLEEP.ip}:{HB_PORT}")
    line = _ztunnel_lines(rec, rejection_error(denied_by("pay/ledger-deny")))[0]
    got = proxylog.parse(line, "ztunnel/node-2")
    assert got is not None and got.denied and got.policy == "pay/ledger-deny"
    assert got.decision == "denied by policy pay/ledger-deny"
    assert (got.src, got.hbone) == (f"{SLEEP.ip}:{HB_PORT}", f"{RATINGS.ip}:9080")
    strict = proxylog.parse(_ztunnel_lines(rec, rejection_error(denied_by(
        "istio-system/istio_converted_static_strict")))[0], "ztunnel/node-2")
    assert strict is not None and "PeerAuthentication STRICT" in strict.decision


def test_envoy_text_and_json_lines() -> None:
    now = time.time()
    passthrough = AccessEntry(start=now, response_flags="-", upstream_cluster="PassthroughCluster",
                              upstream_host="10.1.2.3:80", downstream_remote_address="10.0.0.5:4000",
                              downstream_local_address="10.1.2.3:80",
                              upstream_local_address="10.0.0.5:4001", route_name="allow_any")
    got = proxylog.parse(text_line(passthrough), "app/ns/pod/istio-proxy")
    assert got is not None and got.format == "envoy" and got.decision == "PassthroughCluster"
    assert (got.src, got.upstream_local) == ("10.0.0.5:4000", "10.0.0.5:4001")
    denied = AccessEntry(start=now, method="GET", path="/", protocol="HTTP/1.1", response_code=403,
                         response_code_details="rbac_access_denied_matched_policy"
                                               "[ns[pay]-policy[ledger-deny]-rule[0]]",
                         downstream_remote_address="10.0.0.5:4000")
    got = proxylog.parse(text_line(denied), "waypoint/pay/waypoint")
    assert got is not None and got.denied and got.decision == "denied by policy pay/ledger-deny"
    import json
    as_json = json.dumps(denied.values())
    again = proxylog.parse(as_json, "waypoint/pay/waypoint")
    assert again is not None and again.decision == got.decision
    assert proxylog.parse('{"method": "GET", "peer": "1.2.3.4:5"}', "app/x") is None  # an app's log


def _pkt(ts: int, kind: str, ns: int, name: str, t: tuple[str, int, str, int], flags: str,
         ifname: str = "eth0", mark: int = 0, proto: str = "tcp") -> Event:
    return Event(ts_ns=ts, source="bpf", kind=kind, netns_inode=ns, netns=name, ifname=ifname,
                 proto=proto, saddr=t[0], sport=t[1], daddr=t[2], dport=t[3], tcp_flags=flags,
                 seq=ts, mark=mark, extra={"ip_id": ts % 65536})


def _ct(ts: int, ns: int, name: str, t: tuple[str, int, str, int], reply_from: tuple[str, int],
        proto: str = "tcp") -> Event:
    return Event(ts_ns=ts, source="conntrack", kind="ct_new", netns_inode=ns, netns=name,
                 proto=proto, saddr=t[0], sport=t[1], daddr=t[2], dport=t[3],
                 extra={"status": ["CONFIRMED", "DST_NAT"], "ts_from": "kernel",
                        "reply": {"proto": proto, "saddr": reply_from[0], "sport": reply_from[1],
                                  "daddr": t[0], "dport": t[1]}})


def _ambient_call() -> tuple[list[Event], list[Event]]:
    s, r = SLEEP.ip, RATINGS.ip
    app = (s, APP_PORT, r, 9080)
    dns = (s, DNS_PORT, "10.96.0.10", 53)
    hb = (s, HB_PORT, r, 15008)
    up = (s, UP_PORT, r, 9080)
    packets = [
        _ct(100, S_NS, SLEEP.netns, dns, ("127.0.0.1", 15053), proto="udp"),
        _pkt(101, "tx", S_NS, SLEEP.netns, ("10.244.0.2", DNS_PORT, "127.0.0.1", 15053), "",
             ifname="lo", proto="udp"),
        _ct(1000, S_NS, SLEEP.netns, app, ("127.0.0.1", 15001)),
        _pkt(1001, "tx", S_NS, SLEEP.netns, (s, APP_PORT, "127.0.0.1", 15001), "S", ifname="lo"),
        _pkt(2000, "tx", S_NS, SLEEP.netns, hb, "S", mark=0x539),
        _pkt(2001, "rx", N1, "nl-l-node-1", hb, "S", ifname="nlp0", mark=0x539),
        _pkt(2005, "rx", R_NS, RATINGS.netns, hb, "S"),
        _pkt(3000, "tx", R_NS, RATINGS.netns, up, "S", ifname="lo", mark=0x539),
        # another pod's unrelated connection to the same app port: never joined in
        _pkt(3500, "tx", 13, "nl-l-pod-x", ("10.244.0.9", 40000, r, 9080), "S"),
    ]
    now = time.time_ns()
    logs = (_ztunnel_lines(_record("source", f"{s}:{APP_PORT}"))
            + _ztunnel_lines(_record("destination", f"{s}:{HB_PORT}")))
    proxy = [e for i, line in enumerate(logs)
             for e in proxylog.events_of([line], ["ztunnel/node-1", "ztunnel/node-2"][i],
                                         clock_offset=now - 4000)]
    return packets, proxy


def test_one_story_with_named_legs_joined_by_the_logs() -> None:
    packets, proxy = _ambient_call()
    stories, other = build_stories(build_timelines(packets), proxy, LabView.from_summary(SUMMARY))
    assert len(stories) == 2  # the sleep call, and the unrelated pod's connection on its own
    s = stories[0]
    assert [leg.name for leg in s.legs] == ["DNS → ztunnel :15053", "app → ztunnel :15001",
                                            "HBONE node-1 → node-2 :15008", "ztunnel → app"]
    assert s.legs[2].timeline.client["sport"] == HB_PORT
    assert s.legs[3].timeline.client["sport"] == UP_PORT
    assert [d.extra["proxy"] for d in s.decisions] == ["ztunnel/node-1", "ztunnel/node-2"]
    assert s.outcome() == "completed" and other == []
    assert stories[1].legs[0].timeline.client["saddr"] == "10.244.0.9"
    text = "\n".join(t for _, t in render_story(s, LabView.from_summary(SUMMARY)))
    assert "sent over HBONE to ratings-0" in text and "SYN" in text


def test_a_denied_stream_ends_the_story_at_the_policy() -> None:
    packets, _ = _ambient_call()
    now = time.time_ns()
    src = _ztunnel_lines(_record("source", f"{SLEEP.ip}:{APP_PORT}"), "http status: 401 Unauthorized")
    dst = _ztunnel_lines(_record("destination", f"{SLEEP.ip}:{HB_PORT}"),
                         rejection_error(denied_by("bookinfo/deny-sleep")))
    proxy = (proxylog.events_of(src, "ztunnel/node-1", now - 4000)
             + proxylog.events_of(dst, "ztunnel/node-2", now - 4000))
    stories, _ = build_stories(build_timelines(packets[:-2]), proxy, LabView.from_summary(SUMMARY))
    s = stories[0]
    assert s.outcome() == "ztunnel/node-2: denied by policy bookinfo/deny-sleep"
    assert [leg.name for leg in s.legs][-1] == "HBONE node-1 → node-2 :15008"
