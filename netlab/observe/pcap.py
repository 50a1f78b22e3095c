"""Packet capture beside the tracer: one pcapng per lab interface (`--pcap DIR`).

dumpcap is used rather than scapy: it writes pcapng with interface metadata, keeps
up at veth speed, and flushes cleanly on SIGTERM. It runs inside each netns through
`ip netns exec`, which binds the capture socket there. Files are named
`<netns>__<ifname>.pcapng` so a file says where it was taken.

Never in promiscuous mode (`dumpcap -p`): a promiscuous bridge device hands every frame
it forwards up to its own IP stack too, which drops each one as PACKET_OTHERHOST
(`ip_rcv_core`), so the capture itself would put a "drop" on every cross-node flow.
Nothing is lost by it: a bridge's ports are promiscuous anyway (the bridge sets them),
and their own files hold the frames the bridge forwards between them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from netlab.kernel import netns as nsmod

DRAIN_S = 0.35  # > dumpcap's CAP_READ_TIMEOUT (250 ms)
_STATS = re.compile(r"Packets received/dropped on interface .*?: (\d+)/(\d+)")
from netlab.observe.collector import Capability


def capability() -> Capability:
    if os.geteuid() != 0:
        return Capability(False, "needs root to capture inside lab namespaces")
    if not shutil.which("dumpcap"):
        return Capability(False, "dumpcap not found (install wireshark-common/tshark)")
    return Capability(True, "dumpcap per interface, pcapng")


def lab_interfaces(netns_name: str) -> list[str]:
    from pyroute2 import IPRoute

    with nsmod.entered(netns_name):
        ipr = IPRoute()
    try:
        return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    finally:
        ipr.close()


def _packet_socket_running(pid: int) -> bool:
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        with open(f"/proc/{pid}/net/packet") as f:
            rows = [r.split() for r in f.readlines()[1:]]
    except OSError:
        return False
    return any(len(r) >= 9 and r[3] == "0003" and r[5] == "1" and f"socket:[{r[8]}]" in inodes
               for r in rows)


class PcapWriter:
    """Starts one dumpcap per (netns, interface); stop() flushes and reaps them all."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self._procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    @staticmethod
    def filename(netns_name: str, ifname: str) -> str:
        return f"{netns_name}__{ifname}.pcapng"

    def start(self, netns_names: list[str], timeout: float = 5.0) -> list[Path]:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in netns_names:
            for ifname in lab_interfaces(name):
                path = self.dir / self.filename(name, ifname)
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", name, "dumpcap", "-p", "-i", ifname, "-w", str(path),
                     "-n"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                self._procs.append((proc, path))
        for proc, path in self._procs:
            self._wait_capturing(proc, path, timeout)
        return [p for _, p in self._procs]

    @staticmethod
    def _wait_capturing(proc: subprocess.Popen[bytes], path: Path, timeout: float) -> None:
        """Wait until dumpcap's packet socket is bound for all protocols and running.

        dumpcap prints "Capturing on 'IF'" *before* it opens its socket (seen here:
        the first SYN of a test missing from the file), so its stderr is no signal.
        /proc/PID/net/packet is: a socket of this process with Proto 0003 (ETH_P_ALL)
        and R=1 is receiving.
        """
        deadline = time.monotonic() + timeout
        while not _packet_socket_running(proc.pid):
            if time.monotonic() > deadline or proc.poll() is not None:
                err = b""
                if proc.poll() is not None and proc.stderr is not None:
                    err = proc.stderr.read()
                raise RuntimeError(f"dumpcap for {path.name} did not start: "
                                   f"{err.decode(errors='replace').strip()}")
            time.sleep(0.005)

    def stop(self) -> dict[str, int]:
        """SIGTERM makes dumpcap flush and print its per-interface drop counts.

        But dumpcap 4.0 does not use libpcap's immediate mode: with TPACKET_V3 a packet
        reaches dumpcap only when its ring block fills or the 250 ms read timeout
        retires it, and the open block is not drained on SIGTERM (seen: a ping sent
        just before stop() missing from the file every time without this wait). So
        wait one read timeout, plus margin, first.
        """
        received = dropped = 0
        if self._procs:
            time.sleep(DRAIN_S)
        for proc, _ in self._procs:
            proc.terminate()
        for proc, _ in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                tail = proc.stderr.read().decode(errors="replace")
                proc.stderr.close()
                m = _STATS.search(tail)
                if m:
                    received += int(m[1])
                    dropped += int(m[2])
        files = sum(1 for _, p in self._procs if p.exists())
        self._procs = []
        return {"pcap_files": files, "pcap_packets": received, "lost": dropped}
