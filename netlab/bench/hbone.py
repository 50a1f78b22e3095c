"""`netlab bench hbone`: throughput and connection latency through two ztunnels.

Measured in one run, side by side:
- iperf3 between two ambient pods on different nodes (app → ztunnel → HBONE/mTLS →
  ztunnel → app) and between two out-of-mesh pods (the direct veth + routing path);
- a bare Python TLS 1.3 stream on loopback (the ceiling a Python proxy can reach here);
- the same client → server pair through two C TLS relays (socat + OpenSSL) sitting where
  the ztunnels sit, out of the mesh: what any pair of TLS proxies costs on this machine,
  so the HBONE figure can be read against a ceiling and not only against one stream;
- connect-to-first-byte latency and connection rate with a warm HBONE pool, against
  the same on the direct path. Clients are real: iperf3, and a small Python socket
  client run inside the client pod.

Each throughput run also reports the CPU time the whole machine spent per GB moved
(from /proc/stat), because on a small VM every path here is CPU-bound.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, cast

from netlab import topology
from netlab.errors import BenchError, KernelError
from netlab.kernel import lifecycle, processes, query
from netlab.kernel.apply import wait_ready
from netlab.kernel.processes import run_in
from netlab.model import IstioVersion, Lab
from netlab.plan.state import ReadyCheck

Say = Callable[[str], None]
C_RELAY_TLS_PORT = 15443
C_RELAY_PLAIN_PORT = 15101

BASE = Path(__file__).with_name("hbone.yaml")


def bench_lab(name: str, version: IstioVersion) -> Lab:
    """The base lab (two nodes; the client/iperf3/echo trio in "mesh" and in "plain"),
    under a unique name and at the Istio version asked for."""
    return replace(topology.load([BASE]), name=name, istio_version=version)


LATENCY_CLIENT = r"""
import json, socket, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lat = []
start = time.perf_counter()
for i in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((ip, port), timeout=5)
    s.sendall(b"x")
    if not s.recv(1):
        raise SystemExit("no reply")
    lat.append(time.perf_counter() - t0)
    s.close()
print(json.dumps({"lat": lat, "seconds": time.perf_counter() - start}))
"""


def _pod(summary: dict[str, Any], ns: str, deployment: str) -> dict[str, Any]:
    return next(p for p in summary["pods"] if p["namespace"] == ns and p["deployment"] == deployment)


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


class CpuMeter:
    """Machine-wide CPU spent inside the `with` block: cores busy and CPU-s per GB."""

    def __enter__(self) -> "CpuMeter":
        self._busy0, self._total0 = _cpu_jiffies()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, total = _cpu_jiffies()
        self.busy_s = (busy - self._busy0) / os.sysconf("SC_CLK_TCK")
        self.cores = (os.cpu_count() or 1) * (busy - self._busy0) / max(1, total - self._total0)

    def per_gb(self, gbps: float, seconds: float) -> float:
        """CPU-seconds per GB at `gbps` sustained for `seconds`."""
        return self.busy_s / max(1e-9, gbps * seconds / 8)


def _process_cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ztunnels(lab: str) -> dict[str, int]:
    """node → pid of that node's ztunnel in a running lab."""
    return {p.name.split("/", 1)[1]: p.pid
            for p in query.processes_named(query.record_of(lab), "ztunnel/")}


def _iperf(client_netns: str, server_ip: str, seconds: int, port: int = 5201,
           watch: dict[str, int] | None = None) -> dict[str, Any]:
    """iperf3 for `seconds`; with `watch` (name → pid), each process's CPU-s per GB too."""
    before = {n: _process_cpu_s(p) for n, p in (watch or {}).items()}
    with CpuMeter() as cpu:
        res = run_in(client_netns, ["iperf3", "-c", server_ip, "-p", str(port), "-t", str(seconds), "-J"],
                     capture_output=True, text=True, timeout=seconds + 30)
    if res.returncode != 0:
        raise BenchError(f"iperf3 failed: {res.stdout[-400:]} {res.stderr[-400:]}")
    gbps = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    out: dict[str, Any] = {"gbps": gbps, "cpu_cores": cpu.cores, "cpu_s_per_gb": cpu.per_gb(gbps, seconds)}
    if watch:
        gb = gbps * seconds / 8
        out["process_cpu_s_per_gb"] = {n: (_process_cpu_s(p) - before[n]) / max(1e-9, gb)
                                       for n, p in watch.items()}
    return out


def _write_cert(d: str) -> tuple[str, str]:
    """A lab-issued ECDSA P-256 workload cert and key, as files: (cert, key)."""
    from netlab.dataplane.ca import LabCA
    cert = LabCA(os.path.join(d, "ca")).issue_workload("bench", "server")
    paths = []
    for name, pem in (("cert.pem", cert.cert_pem), ("key.pem", cert.key_pem)):
        paths.append(os.path.join(d, name))
        with open(paths[-1], "wb") as f:
            f.write(pem if isinstance(pem, bytes) else pem.encode())
    return paths[0], paths[1]


def c_relays(summary: dict[str, Any], seconds: int, workdir: str) -> dict[str, float]:
    """iperf3 client → socat TLS relay → socat TLS relay → iperf3 server, out of mesh.

    The relays sit where the ztunnels would (in the client pod and in the server pod) and
    do the same work per byte: plaintext in, TLS 1.3 out, and back. They are C and
    OpenSSL, so this is about the best any pair of TLS proxies does on this machine.
    """
    cert, key = _write_cert(workdir)
    client, server = _pod(summary, "plain", "client"), _pod(summary, "plain", "iperf")
    relays = [
        processes.spawn("bench-relay-in", server["netns"], [
            "socat", "-b", "262144", f"OPENSSL-LISTEN:{C_RELAY_TLS_PORT},reuseaddr,fork,cert={cert},"
            f"key={key},verify=0,openssl-min-proto-version=TLS1.3", "TCP:127.0.0.1:5201"],
            os.path.join(workdir, "relay-in.log")),
        processes.spawn("bench-relay-out", client["netns"], [
            "socat", "-b", "262144", f"TCP-LISTEN:{C_RELAY_PLAIN_PORT},bind=127.0.0.1,reuseaddr,fork",
            f"OPENSSL:{server['ip']}:{C_RELAY_TLS_PORT},verify=0,openssl-min-proto-version=TLS1.3"],
            os.path.join(workdir, "relay-out.log")),
    ]
    try:
        for rec, netns, port in zip(relays, (server["netns"], client["netns"]),
                                    (C_RELAY_TLS_PORT, C_RELAY_PLAIN_PORT)):
            try:
                wait_ready(ReadyCheck(netns, port), rec.pid, rec.log, timeout=5.0)
            except KernelError as e:
                raise BenchError(f"{rec.name} (socat) did not start: {e}") from None
        return _iperf(client["netns"], "127.0.0.1", seconds, port=C_RELAY_PLAIN_PORT)
    finally:
        processes.stop([r.pid for r in relays])


def _latency(client_netns: str, ip: str, n: int) -> dict[str, float]:
    res = run_in(client_netns, ["python3", "-c", LATENCY_CLIENT, ip, "7000", str(n)],
                 capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise BenchError(f"latency client failed: {res.stderr[-400:]}")
    data = json.loads(res.stdout)
    lat = sorted(data["lat"][1:])  # the first connection warms the HBONE pool
    return {"p50_ms": statistics.median(lat) * 1e3, "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
            "conn_per_s": len(data["lat"]) / data["seconds"]}


def bare_tls(seconds: float) -> dict[str, float]:
    """One Python TLS 1.3 stream over loopback, the same ECDSA P-256 as workload certs."""
    with tempfile.TemporaryDirectory() as d:
        cert, key = _write_cert(d)
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.minimum_version = ssl.TLSVersion.TLSv1_3
        sctx.load_cert_chain(cert, key)
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.check_hostname = False
        cctx.verify_mode = ssl.CERT_NONE
        lsock = socket.create_server(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        received = [0]

        def serve() -> None:
            conn, _ = lsock.accept()
            with sctx.wrap_socket(conn, server_side=True) as s:
                while chunk := s.recv(1 << 18):
                    received[0] += len(chunk)

        t = threading.Thread(target=serve)
        t.start()
        buf = b"\0" * (1 << 18)
        with CpuMeter() as cpu, cctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as c:
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                c.sendall(buf)
            c.shutdown(socket.SHUT_WR)
            t.join()
            elapsed = time.perf_counter() - start
        lsock.close()
        gbps = received[0] * 8 / elapsed / 1e9
        return {"gbps": gbps, "cpu_cores": cpu.cores, "cpu_s_per_gb": cpu.per_gb(gbps, elapsed)}


def run(seconds: int, connections: int, version: str, say: Say) -> dict[str, Any]:
    name = f"bh{os.getpid() % 10000}"
    say(f"building lab {name} (ambient namespace 'mesh', plain namespace 'plain')")
    summary = lifecycle.up(bench_lab(name, cast(IstioVersion, version))).summary
    try:
        result: dict[str, Any] = {"seconds": seconds, "connections": connections, "istio": version}
        for ns in ("plain", "mesh"):
            client = _pod(summary, ns, "client")["netns"]
            say(f"iperf3 {ns}: {seconds}s")
            result[ns] = _iperf(client, _pod(summary, ns, "iperf")["ip"], seconds,
                                watch=_ztunnels(name) if ns == "mesh" else None)
            say(f"latency {ns}: {connections} connections")
            result[f"{ns}_latency"] = _latency(client, _pod(summary, ns, "echo")["ip"], connections)
        say(f"iperf3 through two socat TLS relays (out of mesh): {seconds}s")
        with tempfile.TemporaryDirectory() as d:
            result["c_relays"] = c_relays(summary, seconds, d)
    finally:
        lifecycle.down(name)
    say(f"bare Python TLS stream on loopback: {seconds}s")
    result["bare_tls"] = bare_tls(seconds)
    mesh = result["mesh"]["gbps"]
    result["hbone_vs_bare_tls"] = mesh / result["bare_tls"]["gbps"]
    result["hbone_vs_direct"] = mesh / result["plain"]["gbps"]
    result["hbone_vs_c_relays"] = mesh / result["c_relays"]["gbps"]
    result["c_relays_vs_bare_tls"] = result["c_relays"]["gbps"] / result["bare_tls"]["gbps"]
    return result
