"""The TLS key log beside a trace's pcaps, so Wireshark/tshark can read HBONE.

Why: HBONE is HTTP/2 CONNECT inside TLS 1.3 on port 15008; a capture shows only
ciphertext. The lab's proxies build their TLS contexts with Python's ssl module, which
can append each handshake's secrets to a file in the NSS key log format
(`SSLContext.keylog_filename`). A running proxy cannot be given an environment variable,
so it follows a switch file in the lab's state dir (netlab.dataplane.tlsutil): while
the switch exists, every new TLS session's keys go to the path it names.

Only sessions whose handshake happens while the switch is on are logged: an HBONE
connection pooled from before the trace keeps its old keys, and its handshake is not
in the capture either.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from typing import Iterable

from netlab import mesh
from netlab.dataplane.tlsutil import KEYLOG_SWITCH
from netlab.observe.pcap import PcapWriter
from netlab.observe.story import Story

KEYLOG_FILE = "tls-keys.log"


class KeylogSwitch:
    """Turn the key log of one lab's proxies on (start) and off (stop)."""

    def __init__(self, state_dir: str, out_dir: str | Path) -> None:
        self.switch = os.path.join(state_dir, KEYLOG_SWITCH)
        self.path = Path(out_dir).resolve() / KEYLOG_FILE

    def start(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created here so proxies that run as the proxy user (a sidecar, uid 1337) can
        # append to it: owned by its group, not readable by others (it holds secrets).
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o660)
        os.close(fd)
        try:
            os.chown(self.path, -1, mesh.PROXY_GID)
            os.chmod(self.path, 0o660)
        except OSError:
            pass  # not root: only proxies of this user will write
        tmp = self.switch + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(self.path) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.switch)  # proxies never read half a path
        return self.path

    def stop(self) -> None:
        try:
            os.remove(self.switch)
        except FileNotFoundError:
            pass


def tshark_command(pcap: str | Path, keylog: str | Path, port: int = mesh.HBONE_PORT) -> str:
    """The tshark line that decrypts HBONE in `pcap` and prints each CONNECT."""
    return " ".join(shlex.quote(str(a)) for a in (
        "tshark", "-r", pcap, "-o", f"tls.keylog_file:{keylog}", "-d", f"tcp.port=={port},tls",
        "-Y", "http2.headers.method == \"CONNECT\"",
        "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "http2.headers.authority"))


def decode_command(stories: Iterable[Story], keylog: str | Path) -> str:
    """tshark_command for the capture where the first HBONE leg left its source pod
    (every HBONE connection starts there, same node or not)."""
    pcap = "<netns>__<ifname>.pcapng"
    for leg in (leg for s in stories for leg in s.legs if leg.name.startswith("HBONE")):
        first = next((h for h in leg.timeline.hops if h.kind == "tx" and h.ifname), None)
        if first is not None:
            pcap = PcapWriter.filename(first.netns or "", first.ifname or "")
            break
    return tshark_command(Path(keylog).parent / pcap, keylog)
