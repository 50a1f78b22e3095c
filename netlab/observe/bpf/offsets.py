"""The struct member offsets trace.c is compiled with, as -D macros.

Why macros: every kernel read in trace.c is an explicit bpf_probe_read_kernel at
base + OFF_x, never a C member access, so bcc's rewriter cannot smuggle in an offset
from headers that describe another kernel. The packet hooks read sk_buff in two
blocks (trace.c SKB_HOT / SKB_AT) and net_device in one, so the spans those blocks
cover are computed here too.
"""

from __future__ import annotations

import functools

from netlab.observe.bpf.btf import BTF_PATH, Btf

# (macro, struct, member path) resolved through BTF.
OFFSETS = (
    ("OFF_SKB_HEAD", "sk_buff", "head"),
    ("OFF_SKB_NETWORK_HEADER", "sk_buff", "network_header"),
    ("OFF_SKB_PROTOCOL", "sk_buff", "protocol"),
    ("OFF_SKB_MARK", "sk_buff", "mark"),
    ("OFF_SKB_LEN", "sk_buff", "len"),
    ("OFF_SKB_DEV", "sk_buff", "dev"),
    ("OFF_SKB_SK", "sk_buff", "sk"),
    ("OFF_SKB_REFDST", "sk_buff", "_skb_refdst"),
    ("OFF_DEV_IFINDEX", "net_device", "ifindex"),
    ("OFF_DEV_NAME", "net_device", "name"),
    ("OFF_DEV_ND_NET", "net_device", "nd_net.net"),
    ("OFF_NET_INUM", "net", "ns.inum"),
    ("OFF_SK_NET", "sock_common", "skc_net.net"),
    ("OFF_DST_DEV", "dst_entry", "dev"),
)

# sk_buff members the packet hooks read in two blocks (trace.c SKB_HOT / SKB_AT), with
# their sizes: the few needed to decide on every packet, and the rest, read only for
# a packet that is sent.
SKB_HOT = {"OFF_SKB_HEAD": 8, "OFF_SKB_NETWORK_HEADER": 2, "OFF_SKB_PROTOCOL": 2}
SKB_BLOCK = {"OFF_SKB_MARK": 4, "OFF_SKB_LEN": 4, "OFF_SKB_DEV": 8, "OFF_SKB_SK": 8,
             "OFF_SKB_REFDST": 8}
# net_device members read as one block when they lie within DEV_BLOCK_MAX bytes.
DEV_BLOCK = {"OFF_DEV_IFINDEX": 4, "OFF_DEV_ND_NET": 8, "OFF_DEV_NAME": 16}
DEV_BLOCK_MAX = 192


def kernel_offsets(btf_path: str = BTF_PATH) -> dict[str, int]:
    """OFF_* macros from BTF, plus the 8-aligned spans of sk_buff that cover SKB_HOT
    (SKB_HOT_START/END) and SKB_BLOCK (SKB_BLK_START/END), each read in one go, and
    DEV_BLK_START/END for DEV_BLOCK when it is small enough.

    Read once per process and file: parsing the kernel's BTF costs about 0.15 s, and a
    lab starts a tracer (which asks twice) for each of its variants on the same kernel.
    """
    return dict(_offsets(btf_path))


@functools.lru_cache(maxsize=4)
def _offsets(btf_path: str) -> dict[str, int]:
    btf = Btf(btf_path)
    offs = {macro: btf.offset(s, p) for macro, s, p in OFFSETS}
    for prefix, members in (("SKB_HOT", SKB_HOT), ("SKB_BLK", SKB_BLOCK)):
        offs[f"{prefix}_START"] = min(offs[m] for m in members) // 8 * 8
        offs[f"{prefix}_END"] = max(offs[m] + size for m, size in members.items())
    start = min(offs[m] for m in DEV_BLOCK) // 8 * 8
    end = max(offs[m] + size for m, size in DEV_BLOCK.items())
    if end - start <= DEV_BLOCK_MAX:
        offs["DEV_BLK_START"], offs["DEV_BLK_END"] = start, end
    return offs
