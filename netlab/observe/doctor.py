"""`netlab doctor`: can each collector run here, and if not, why (in plain words)."""

from __future__ import annotations

from netlab.observe import registry
from netlab.observe.collector import Capability


def doctor() -> list[tuple[str, Capability]]:
    """Every registered collector, then pcap.

    pcap is listed here rather than in the registry because it is not a collector:
    it writes files beside a trace (Tracer's pcap_dir) and yields no events."""
    from netlab.observe.pcap import capability as pcap_capability

    return [*registry.probe_all(), ("pcap", pcap_capability())]
