"""`netlab bench hbone`: throughput and connection latency through two ztunnels.

Measured in one run, side by side:
- iperf3 between two ambient pods on different nodes (app → ztunnel → HBONE/mTLS →
  ztunnel → app) and between two out-of-mesh pods (the direct veth + routing path);
- a bare Python TLS 1.3 stream on loopback (the ceiling a Python proxy can reach here);
- connect-to-first-byte latency and connection rate with a warm HBONE pool, against
  the same on the direct path. Clients are real: iperf3, and a small Python socket
  client run inside the client pod.
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
from typing import Any, Callable

import yaml

from netlab import runtime
from netlab.kernel.processes import run_in

Say = Callable[[str], None]

def topology(name: str, version: str) -> str:
    """Two nodes; the same client/iperf3/echo trio in an ambient and a plain namespace."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "netlab.dev/v1alpha1", "kind": "Lab", "metadata": {"name": name},
         "spec": {"istio": {"version": version}, "nodes": [{"name": "node-1"}, {"name": "node-2"}]}},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "mesh", "labels": {"istio.io/dataplane-mode": "ambient"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}},
    ]
    containers = {
        "client": ("node-1", {"name": "c", "image": "netlab/sleep"}),
        "iperf": ("node-2", {"name": "c", "image": "iperf3", "command": ["iperf3", "-s", "-p", "5201"],
                             "ports": [{"containerPort": 5201}]}),
        "echo": ("node-2", {"name": "c", "image": "netlab/tcp-echo", "ports": [{"containerPort": 7000}]}),
    }
    for ns in ("mesh", "plain"):
        for role, (node, container) in containers.items():
            docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": role, "namespace": ns},
                         "spec": {"selector": {"matchLabels": {"app": role}},
                                  "template": {"metadata": {"labels": {"app": role}},
                                               "spec": {"nodeName": node, "containers": [container]}}}})
    return yaml.safe_dump_all(docs, sort_keys=False)


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


def _iperf(client_netns: str, server_ip: str, seconds: int) -> float:
    res = run_in(client_netns, ["iperf3", "-c", server_ip, "-p", "5201", "-t", str(seconds), "-J"],
                 capture_output=True, text=True, timeout=seconds + 30)
    if res.returncode != 0:
        raise RuntimeError(f"iperf3 failed: {res.stdout[-400:]} {res.stderr[-400:]}")
    return json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def _latency(client_netns: str, ip: str, n: int) -> dict[str, float]:
    res = run_in(client_netns, ["python3", "-c", LATENCY_CLIENT, ip, "7000", str(n)],
                 capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"latency client failed: {res.stderr[-400:]}")
    data = json.loads(res.stdout)
    lat = sorted(data["lat"][1:])  # the first connection warms the HBONE pool
    return {"p50_ms": statistics.median(lat) * 1e3, "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
            "conn_per_s": len(data["lat"]) / data["seconds"]}


def bare_tls_gbps(seconds: float) -> float:
    """One Python TLS 1.3 stream over loopback, the same ECDSA P-256 as workload certs."""
    from netlab.dataplane.ca import LabCA
    with tempfile.TemporaryDirectory() as d:
        ca = LabCA(d)
        cert = ca.issue_workload("bench", "server")
        paths = {}
        for k, v in (("cert", cert.cert_pem), ("key", cert.key_pem), ("root", cert.root_pem)):
            paths[k] = os.path.join(d, k)
            with open(paths[k], "wb") as f:
                f.write(v if isinstance(v, bytes) else v.encode())
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.minimum_version = ssl.TLSVersion.TLSv1_3
        sctx.load_cert_chain(paths["cert"], paths["key"])
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
        with cctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as c:
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                c.sendall(buf)
            c.shutdown(socket.SHUT_WR)
            t.join()
            elapsed = time.perf_counter() - start
        lsock.close()
        return received[0] * 8 / elapsed / 1e9


def run(seconds: int, connections: int, version: str, say: Say) -> dict[str, Any]:
    name = f"bh{os.getpid() % 10000}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(topology(name, version))
        topo = f.name
    try:
        say(f"building lab {name} (ambient namespace 'mesh', plain namespace 'plain')")
        summary = runtime.up([topo], name).summary
        try:
            result: dict[str, Any] = {"seconds": seconds, "connections": connections, "istio": version}
            for ns in ("plain", "mesh"):
                client = _pod(summary, ns, "client")["netns"]
                say(f"iperf3 {ns}: {seconds}s")
                result[f"{ns}_gbps"] = _iperf(client, _pod(summary, ns, "iperf")["ip"], seconds)
                say(f"latency {ns}: {connections} connections")
                result[f"{ns}_latency"] = _latency(client, _pod(summary, ns, "echo")["ip"], connections)
        finally:
            runtime.down(name)
        say(f"bare Python TLS stream on loopback: {seconds}s")
        result["bare_tls_gbps"] = bare_tls_gbps(seconds)
    finally:
        os.unlink(topo)
    result["hbone_vs_bare_tls"] = result["mesh_gbps"] / result["bare_tls_gbps"]
    result["hbone_vs_direct"] = result["mesh_gbps"] / result["plain_gbps"]
    return result
