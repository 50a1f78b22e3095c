"""Envoy's response flags: the short codes access logs and `response_flags` carry.

Envoy prints the set in one fixed order (its `ResponseFlagUtils` table), comma-joined,
and `-` when the set is empty: a connect failure retried until the limit is `UF,URX`,
never `URX,UF`. Only the flags an Istio dataplane emulation can raise are listed; the
order is Envoy's (envoyproxy/envoy `source/common/stream_info/utility.cc`, 1.31).
"""

from __future__ import annotations

from typing import Iterable

NO_HEALTHY_UPSTREAM = "UH"
UPSTREAM_REQUEST_TIMEOUT = "UT"
LOCAL_RESET = "LR"
UPSTREAM_REMOTE_RESET = "UR"
UPSTREAM_CONNECTION_FAILURE = "UF"
UPSTREAM_CONNECTION_TERMINATION = "UC"
UPSTREAM_OVERFLOW = "UO"
NO_ROUTE_FOUND = "NR"
DOWNSTREAM_CONNECTION_TERMINATION = "DC"
UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
DOWNSTREAM_PROTOCOL_ERROR = "DPE"
UPSTREAM_PROTOCOL_ERROR = "UPE"
NO_CLUSTER_FOUND = "NC"

ORDER: tuple[str, ...] = (
    "LH", NO_HEALTHY_UPSTREAM, UPSTREAM_REQUEST_TIMEOUT, LOCAL_RESET, UPSTREAM_REMOTE_RESET,
    UPSTREAM_CONNECTION_FAILURE, UPSTREAM_CONNECTION_TERMINATION, UPSTREAM_OVERFLOW,
    NO_ROUTE_FOUND, "DI", "FI", "RL", "UAEX", "RLSE", DOWNSTREAM_CONNECTION_TERMINATION,
    UPSTREAM_RETRY_LIMIT_EXCEEDED, "SI", "IH", DOWNSTREAM_PROTOCOL_ERROR, "UMSDR", "RFCF",
    "NFCF", "DT", UPSTREAM_PROTOCOL_ERROR, NO_CLUSTER_FOUND, "OM", "DF", "DO", "DR",
)
_RANK = {f: i for i, f in enumerate(ORDER)}


def render(flags: Iterable[str]) -> str:
    """`UF,URX` for {"URX", "UF"}; `-` for none. An unknown flag is a programming error."""
    got = set(flags)
    unknown = got - set(_RANK)
    if unknown:
        raise ValueError(f"not an Envoy response flag: {sorted(unknown)}")
    return ",".join(sorted(got, key=_RANK.__getitem__)) or "-"
