"""`netlab doctor`: can each collector run here, and if not, why (in plain words)."""

from __future__ import annotations

from netlab.observe.collector import Capability


def doctor() -> list[tuple[str, Capability]]:
    from netlab.observe.bpf import BpfCollector
    from netlab.observe.conntrack import ConntrackCollector
    from netlab.observe.nftrace import NftraceCollector
    from netlab.observe.pcap import capability as pcap_capability

    out: list[tuple[str, Capability]] = []
    for col in (BpfCollector(), ConntrackCollector(), NftraceCollector()):
        try:
            out.append((col.name, col.can_run()))
        except Exception as e:  # noqa: BLE001 - doctor must report, never crash
            out.append((col.name, Capability(False, f"probe failed: {e}")))
    out.append(("pcap", pcap_capability()))
    return out
