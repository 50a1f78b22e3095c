"""`netlab logs` and `netlab metrics`: read what the lab's ztunnels report.

Logs are the files the applier already writes per process; metrics are scraped from
15020 inside each node netns, exactly where a Prometheus on the host network would
find a real ztunnel. Both read the lab record, so they work for any running lab.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import click

from netlab import runtime
from netlab.errors import NetlabError
from netlab.kernel import netns as nsmod

METRICS_PORT = 15020


def _log_files(lab: str, component: str | None) -> list[str]:
    record = runtime.record_of(lab)
    names = [p.name for p in record.processes]
    if component:
        names = [n for n in names if n == component or n.startswith(component.rstrip("/") + "/")]
    if not names:
        raise NetlabError(f"no process {component!r} in lab {lab}; "
                                   f"try one of: {', '.join(p.name for p in record.processes)}")
    return [os.path.join(record.dir, "logs", n.replace("/", "_") + ".log") for n in names]


def _follow(paths: list[str], prefix: bool) -> None:
    handles = {p: open(p, errors="replace") for p in paths if os.path.exists(p)}
    try:
        while True:
            idle = True
            for path, f in handles.items():
                line = f.readline()
                while line:
                    idle = False
                    tag = os.path.basename(path)[:-4] + ": " if prefix else ""
                    sys.stdout.write(tag + line)
                    line = f.readline()
            sys.stdout.flush()
            if idle:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for f in handles.values():
            f.close()


def scrape(netns: str, port: int = METRICS_PORT, timeout: float = 5.0) -> str:
    """GET /metrics from inside a node netns (the socket is created there)."""
    with nsmod.entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        status = head.split(b"\r\n")[0].decode(errors="replace")
        raise NetlabError(f"{netns}:{port} answered {status!r}")
    return body.decode()


def register(main: click.Group) -> None:
    @main.command("logs")
    @click.argument("lab")
    @click.argument("component", required=False)
    @click.option("--follow", "-f", is_flag=True, help="keep printing new lines")
    def logs(lab: str, component: str | None, follow: bool) -> None:
        """Print a lab's process logs: `ztunnel` (all nodes), `ztunnel/NODE`, or any process."""
        paths = _log_files(lab, component)
        if follow:
            _follow(paths, prefix=len(paths) > 1)
            return
        for path in paths:
            if len(paths) > 1:
                click.echo(f"==> {os.path.basename(path)} <==")
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    sys.stdout.write(f.read())

    @main.command("metrics")
    @click.argument("lab")
    def metrics(lab: str) -> None:
        """Scrape every ztunnel's :15020/metrics from inside its node netns."""
        runtime.require_root()
        record = runtime.record_of(lab)
        zts = [p for p in record.processes if p.name.startswith("ztunnel/")]
        if not zts:
            raise NetlabError(f"lab {lab} runs no ztunnel (no ambient pods)")
        for p in zts:
            click.echo(f"# ztunnel {p.name.split('/', 1)[1]} ({p.netns})")
            sys.stdout.write(scrape(p.netns))
