"""One event schema for every collector (BPF, conntrack, nftrace, proxy logs).

Events are keyed by netns inode + 5-tuple, never by tuple alone: the same tuple
exists in a pod and on its node at once. Serialised as JSON lines; the field names
below are the documented, stable schema (docs/events.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Source = Literal["bpf", "conntrack", "nftrace", "proxy", "client"]


@dataclass
class Event:
    ts_ns: int  # CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns() clock)
    source: Source
    kind: str  # "rx", "tx", "drop", "retransmit_synack", "send_reset", "recv_reset",
    #            "sock_state", "ct_new", "ct_update", "ct_destroy", "nf_rule", "nf_verdict", ...
    netns_inode: int
    netns: str | None = None  # lab netns name, filled by the collector when known
    ifindex: int | None = None
    ifname: str | None = None
    proto: str | None = None  # "tcp", "udp", "icmp"
    saddr: str | None = None
    sport: int | None = None
    daddr: str | None = None
    dport: int | None = None
    tcp_flags: str | None = None  # "S", "SA", "A", "FA", "R", ... (tcpdump letters)
    seq: int | None = None
    ack: int | None = None
    mark: int | None = None
    reason: str | None = None  # drop reason name, e.g. "NO_SOCKET", "NETFILTER_DROP"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = {k: v for k, v in asdict(self).items() if v is not None and v != {}}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "Event":
        return cls(**json.loads(line))

    def tuple(self) -> tuple[str | None, int | None, str | None, int | None, str | None]:
        return (self.saddr, self.sport, self.daddr, self.dport, self.proto)
