"""The BPF program: trace.c beside this module, the tracepoints it hooks, and how it
is compiled for the running kernel.

Why trace.c is read through importlib.resources: it is package data, so an installed
(non-editable) netlab finds it inside the package wherever that lives, and no code
guesses paths relative to a source checkout.
"""

from __future__ import annotations

from importlib import resources

# Every hook in trace.c is a tracepoint (the two packet hooks attached raw): this
# kernel has tracepoints but no kprobes. can_run() checks each one's format file.
TRACEPOINTS = (
    "net/netif_receive_skb", "net/net_dev_queue", "skb/kfree_skb",
    "tcp/tcp_retransmit_synack", "tcp/tcp_send_reset", "tcp/tcp_receive_reset",
    "sock/inet_sock_set_state",
)
RINGBUF_PAGES = 8192  # 32 MiB: ~300k events, ~5 s of a 2,000 conn/s lab (30 events each)
SOURCE_NAME = "trace.c"


def source() -> str:
    """trace.c's text, from the installed package."""
    return resources.files(__package__).joinpath(SOURCE_NAME).read_text()


def cflags(offsets: dict[str, int]) -> list[str]:
    """Compiler flags: the BTF offsets as -D macros (offsets.py), and the ring's size."""
    flags = [f"-D{k}={v}" for k, v in offsets.items()]
    return flags + [f"-DRINGBUF_PAGES={RINGBUF_PAGES}", "-Wno-macro-redefined"]


def tracepoint_names() -> str:
    """The hooks as perf names them ("skb:kfree_skb"), for can_run()'s answer."""
    return ", ".join(tp.replace("/", ":") for tp in TRACEPOINTS)
