"""The ctnetlink parser (netlab/observe/conntrack.py) on messages laid out as the
kernel sends them: netlink header, nfgenmsg, then nested attributes with the NESTED
flag set and values in network byte order (uapi nfnetlink_conntrack.h)."""

from __future__ import annotations

import socket
import struct

from netlab.observe.collector import Scope
from netlab.observe.conntrack import ConntrackCollector, decode, messages

NLA_F_NESTED = 0x8000


def nla(atype: int, payload: bytes, nested: bool = False) -> bytes:
    hdr = struct.pack("=HH", 4 + len(payload), atype | (NLA_F_NESTED if nested else 0))
    return hdr + payload + b"\0" * (-len(payload) % 4)


def tuple_attr(atype: int, saddr: str, daddr: str, sport: int, dport: int) -> bytes:
    ip = nla(1, nla(1, socket.inet_aton(saddr)) + nla(2, socket.inet_aton(daddr)), True)
    proto = nla(2, nla(1, bytes([6])) + nla(2, struct.pack(">H", sport))
                + nla(3, struct.pack(">H", dport)), True)
    return nla(atype, ip + proto, True)


def ct_msg(msg: int, flags: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + attrs  # struct nfgenmsg
    return struct.pack("=IHHII", 16 + len(body), (1 << 8) | msg, flags, 0, 0) + body


def redirected_new() -> bytes:
    # app 10.0.0.5:40000 -> VIP 10.96.0.10:80, REDIRECTed to 127.0.0.1:15001
    attrs = (tuple_attr(1, "10.0.0.5", "10.96.0.10", 40000, 80)
             + tuple_attr(2, "127.0.0.1", "10.0.0.5", 15001, 40000)
             + nla(3, struct.pack(">I", (1 << 3) | (1 << 5)))  # CONFIRMED | DST_NAT
             + nla(4, nla(1, nla(1, bytes([1])), True), True)  # TCP state SYN_SENT
             + nla(8, struct.pack(">I", 0x539))
             + nla(12, struct.pack(">I", 77)))
    return ct_msg(0, 0x400 | 0x200, attrs)  # IPCTNL_MSG_CT_NEW, NLM_F_CREATE|EXCL


def test_new_event_tuples_status_state() -> None:
    data = redirected_new() + ct_msg(2, 0, tuple_attr(1, "10.0.0.5", "10.0.0.6", 1, 2))
    msgs = list(messages(data))
    assert len(msgs) == 2
    ev = decode(data, *msgs[0], "pod", 4026532000, 123)
    assert ev is not None
    assert (ev.kind, ev.netns, ev.netns_inode, ev.ts_ns) == ("ct_new", "pod", 4026532000, 123)
    assert (ev.proto, ev.saddr, ev.sport, ev.daddr, ev.dport) == \
        ("tcp", "10.0.0.5", 40000, "10.96.0.10", 80)
    assert ev.extra["reply"] == {"proto": "tcp", "saddr": "127.0.0.1", "sport": 15001,
                                 "daddr": "10.0.0.5", "dport": 40000}
    assert ev.extra["status"] == ["CONFIRMED", "DST_NAT"]
    assert ev.extra["state"] == "SYN_SENT"
    assert ev.mark == 0x539 and ev.extra["id"] == 77
    destroy = decode(data, *msgs[1], "pod", 1, 0)
    assert destroy is not None and destroy.kind == "ct_destroy" and destroy.sport == 1


def test_update_and_foreign_messages() -> None:
    upd = ct_msg(0, 0, tuple_attr(1, "10.0.0.5", "10.0.0.6", 1, 2))
    ev = decode(upd, *next(messages(upd)), "n", 1, 0)
    assert ev is not None and ev.kind == "ct_update"
    other = struct.pack("=IHHII", 16, 3, 0, 0, 0)  # NLMSG_DONE: not a conntrack event
    assert decode(other, *next(messages(other)), "n", 1, 0) is None


def test_flush_applies_the_port_scope_to_either_tuple() -> None:
    col = ConntrackCollector()
    col._scope = Scope(netns={"pod": 1}, port=15001)
    other = ct_msg(0, 0x400, tuple_attr(1, "10.0.0.5", "10.0.0.6", 1, 2)
                   + tuple_attr(2, "10.0.0.6", "10.0.0.5", 2, 1))
    col._raw.append((redirected_new() + other, "pod", 1, 5))
    evs = col.flush()
    assert [e.dport for e in evs] == [80]  # matched through the reply tuple's 15001
    assert col._counters["filtered"] == 1 and col._counters["events"] == 1
