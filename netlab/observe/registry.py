"""The one list of collectors: name -> factory, in the order they start.

Why one registry: the Tracer, `netlab doctor` and the CLI each need "which collectors
exist", and three copies of that list drift. Factories import their module only when
called, so looking a name up never imports bcc or touches the kernel.
"""

from __future__ import annotations

from typing import Callable

from netlab.errors import NetlabError
from netlab.observe.collector import Capability, Collector


class UnknownCollector(NetlabError):
    pass


def _bpf() -> Collector:
    from netlab.observe.bpf import BpfCollector
    return BpfCollector()


def _conntrack() -> Collector:
    from netlab.observe.conntrack import ConntrackCollector
    return ConntrackCollector()


def _nftrace() -> Collector:
    from netlab.observe.nftrace import NftraceCollector
    return NftraceCollector()


# Insertion order is start order (and the order doctor lists them).
FACTORIES: dict[str, Callable[[], Collector]] = {
    "bpf": _bpf,
    "conntrack": _conntrack,
    "nftrace": _nftrace,
}


def names() -> tuple[str, ...]:
    """Every registered collector, in start order: the default set of a trace."""
    return tuple(FACTORIES)


def create(name: str) -> Collector:
    """A new, not yet started collector called `name`."""
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise UnknownCollector(f"unknown collector {name!r} "
                               f"(known: {', '.join(names())})") from None
    return factory()


def probe(name: str) -> Capability:
    """create(name).can_run(), never raising: a broken probe (or an unknown name) is
    reported as a reason, because doctor and the CLI must explain, not crash."""
    try:
        return create(name).can_run()
    except Exception as e:  # noqa: BLE001 - a broken probe is a reason, not a crash
        return Capability(False, f"probe failed: {e}")


def probe_all(selected: tuple[str, ...] | None = None) -> list[tuple[str, Capability]]:
    """(name, Capability) for `selected` (default: every collector), in that order."""
    return [(name, probe(name)) for name in (names() if selected is None else selected)]
