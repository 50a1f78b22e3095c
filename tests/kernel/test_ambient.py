"""Ambient end to end, judged on evidence outside ztunnel: what the echo app saw, what
crossed a node's eth0 (tcpdump), and what iptables-save prints inside the pods.

One lab per Istio version (1.23 TPROXY and 1.24+ REDIRECT), built through the CLI from
a copy of topologies/ambient-bookinfo.yaml with the version line rewritten.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from netlab.plan import iptables_text as it
from netlab.plan.istio_rules import render_ambient_inpod
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.kernel

TOPO = REPO / "topologies" / "ambient-bookinfo.yaml"
GOLDEN = REPO.parent / "shared" / "reference" / "istio"
VERSIONS = ("1.23", "1.24+")
PCAP_HEADER = 24


@pytest.fixture(params=VERSIONS, scope="module")
def version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def lab(version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Built once per version; always torn down."""
    text = TOPO.read_text()
    assert 'version: "1.24+"' in text
    f = tmp_path_factory.mktemp("ambient") / "ambient.yaml"
    f.write_text(text.replace('version: "1.24+"', f'version: "{version}"'))
    name = f"ta{os.getpid() % 1000}v{version.replace('.', '').replace('+', 'p')}"
    try:
        run_cli("up", str(f), "--name", name, check=True)
        status = json.loads(run_cli("status", name, "--json", check=True).stdout)
        pods = {f"{p['namespace']}/{p['name']}": p for p in status["pods"]}
        nodes = {n["name"]: n for n in status["nodes"]}
        yield {"name": name, "version": version, "pods": pods, "nodes": nodes}
    finally:
        if os.path.isdir(f"/run/netlab/{name}"):
            run_cli("down", name)


def curl(lab: dict[str, Any], pod: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("exec", lab["name"], pod, "--", "curl", "-sS", "-m", "5", *extra, url, timeout=30)


def echo(lab: dict[str, Any], pod: str, url: str, *extra: str) -> dict[str, Any]:
    res = curl(lab, pod, url, *extra)
    assert res.returncode == 0, f"curl {url} from {pod} exit {res.returncode}: {res.stderr}"
    return json.loads(res.stdout)


@pytest.mark.parametrize("target", ["bookinfo/ratings-0", "bookinfo/ratings-1", "service"])
def test_ambient_to_ambient_keeps_client_ip(lab: dict[str, Any], target: str) -> None:
    """(a) same-node (ratings-1) and cross-node (ratings-0) by pod IP and by Service name."""
    client = lab["pods"]["bookinfo/sleep-0"]
    if target == "service":
        url = "http://ratings:9080/"
    else:
        url = f"http://{lab['pods'][target]['ip']}:9080/"
    for _ in range(3 if target == "service" else 1):
        got = echo(lab, "bookinfo/sleep-0", url)
        assert got["peer"].split(":")[0] == client["ip"], got


def test_same_and_cross_node_placement(lab: dict[str, Any]) -> None:
    """The topology really gives us both cases (otherwise the test above proves less)."""
    p = lab["pods"]
    assert p["bookinfo/sleep-0"]["node"] == p["bookinfo/ratings-1"]["node"]
    assert p["bookinfo/sleep-0"]["node"] != p["bookinfo/ratings-0"]["node"]


class Capture:
    """tcpdump on eth0 of a node netns, written to a file; stopped by its own pid."""

    def __init__(self, netns: str, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{netns}", "tcpdump", "-i", "eth0", "-nn", "-U", "--immediate-mode", "-s", "0",
             "-w", str(path), "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on eth0 ..." once the socket is up
        assert "listening" in line, line

    def stop(self, timeout: float = 5.0) -> bytes:
        """Stop once the conversation's packets are on disk (the file stops growing)."""
        deadline, last = time.monotonic() + timeout, -1
        while time.monotonic() < deadline:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size > PCAP_HEADER and size == last:
                break
            last = size
            time.sleep(0.2)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        return self.path.read_bytes()

    def ports(self) -> set[int]:
        out = subprocess.run(["tcpdump", "-nn", "-r", str(self.path)], capture_output=True,
                             text=True, timeout=30).stdout
        found = set()
        for line in out.splitlines():
            for field in line.split()[2:5:2]:  # "src.port" and "dst.port:"
                tail = field.rstrip(":").rsplit(".", 1)
                if len(tail) == 2 and tail[1].isdigit():
                    found.add(int(tail[1]))
        return found


def _captured(lab: dict[str, Any], client: str, tmp_path: Path,
              server: str = "bookinfo/ratings-0", port: int = 9080) -> tuple[bytes, set[int], str]:
    marker = f"netlab-marker-{uuid.uuid4().hex}"
    node = lab["nodes"][lab["pods"][client]["node"]]
    cap = Capture(node["netns"], tmp_path / "cap.pcap")
    try:
        res = curl(lab, client, f"http://{lab['pods'][server]['ip']}:{port}/",
                   "-H", f"X-Marker: {marker}")
    finally:
        data = cap.stop()
    assert res.returncode == 0, res.stderr
    assert marker in res.stdout  # the echo app did receive it
    assert json.loads(res.stdout)["peer"].split(":")[0] == lab["pods"][client]["ip"]
    return data, cap.ports(), marker


def test_cross_node_ambient_traffic_is_encrypted(lab: dict[str, Any], tmp_path: Path) -> None:
    """(b) the marker never crosses the node's eth0 in clear; HBONE (15008) does."""
    data, ports, marker = _captured(lab, "bookinfo/sleep-0", tmp_path)
    assert marker.encode() not in data
    assert 15008 in ports and 9080 not in ports, ports


def test_out_of_mesh_client_is_plaintext(lab: dict[str, Any], tmp_path: Path) -> None:
    """(b) control: outside/sleep → ratings goes in clear (PERMISSIVE, ztunnel 15006)."""
    data, ports, marker = _captured(lab, "outside/sleep-0", tmp_path)
    assert marker.encode() in data
    assert 9080 in ports and 15008 not in ports, ports


def test_mesh_client_to_out_of_mesh_server_is_passthrough(lab: dict[str, Any], tmp_path: Path) -> None:
    """§3: the destination speaks no HBONE, so ztunnel's 15001 passes the bytes through in clear."""
    data, ports, marker = _captured(lab, "bookinfo/sleep-0", tmp_path, server="outside/echo-0", port=8080)
    assert marker.encode() in data
    assert 8080 in ports and 15008 not in ports, ports
    # ...and it did go through ztunnel: the server sees a connection from another socket
    # (ztunnel's, made in the client pod) than the one curl opened. Without the redirect
    # the two source ports would be the same.
    res = curl(lab, "bookinfo/sleep-0", f"http://{lab['pods']['outside/echo-0']['ip']}:8080/",
               "-w", "\n%{local_port}")
    assert res.returncode == 0, res.stderr
    body, curl_port = res.stdout.rsplit("\n", 1)
    peer_ip, peer_port = json.loads(body)["peer"].rsplit(":", 1)
    assert peer_ip == lab["pods"]["bookinfo/sleep-0"]["ip"]
    assert int(peer_port) != int(curl_port)


def test_out_of_mesh_pair_keeps_its_own_connection(lab: dict[str, Any]) -> None:
    """Control for the port check above: outside → outside is not proxied, same port both ends."""
    res = curl(lab, "outside/sleep-0", f"http://{lab['pods']['outside/echo-0']['ip']}:8080/",
               "-w", "\n%{local_port}")
    assert res.returncode == 0, res.stderr
    body, curl_port = res.stdout.rsplit("\n", 1)
    assert int(json.loads(body)["peer"].rsplit(":", 1)[1]) == int(curl_port)


def iptables_save(netns: str) -> str:
    res = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "iptables-save"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("pod", ["bookinfo/sleep-0", "bookinfo/ratings-0", "bookinfo/ratings-1"])
def test_inpod_rules_equal_rendered_golden(lab: dict[str, Any], pod: str) -> None:
    """(c) what the kernel holds in each ambient pod equals the rendering (and the golden)."""
    live = it.parse(iptables_save(lab["pods"][pod]["netns"]))
    expected = it.parse(render_ambient_inpod(lab["version"], dns_capture=False))
    assert live == expected, it.diff(expected, live, ("rendered", "live"))
    golden = GOLDEN / "ambient-inpod-1.28" / "dns_pod_disabled_and_on_globally.golden"
    if lab["version"] == "1.24+" and golden.exists():
        g = it.parse_all(golden.read_text())[0]
        assert live == g, it.diff(g, live, ("golden", "live"))


def test_out_of_mesh_pod_has_no_istio_chains(lab: dict[str, Any]) -> None:
    """(d)"""
    text = iptables_save(lab["pods"]["outside/sleep-0"]["netns"])
    assert "ISTIO" not in text, text


def test_metrics_report_both_sides(lab: dict[str, Any]) -> None:
    """`netlab metrics` scrapes 15020 in the node netns; ztunnel's own claims, so only a smoke check."""
    echo(lab, "bookinfo/sleep-0", f"http://{lab['pods']['bookinfo/ratings-0']['ip']}:9080/")
    res = run_cli("metrics", lab["name"], check=True)
    assert 'reporter="source"' in res.stdout and 'reporter="destination"' in res.stdout
    assert 'connection_security_policy="mutual_tls"' in res.stdout
    logs = run_cli("logs", lab["name"], "ztunnel", check=True).stdout
    assert '"direction":"inbound"' in logs and '"direction":"outbound"' in logs


PROMETHEUS = Path("/usr/bin/prometheus")


def _prometheus_query(netns: str, web: str, query: str) -> list[dict[str, Any]]:
    res = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "curl", "-sS", "-m", "3", "-G",
                          f"http://{web}/api/v1/query", "--data-urlencode", f"query={query}"],
                         capture_output=True, text=True, timeout=15)
    if res.returncode != 0:
        return []
    return json.loads(res.stdout)["data"]["result"]


@pytest.mark.skipif(not PROMETHEUS.exists(), reason=f"{PROMETHEUS} absent: apt-get install prometheus")
def test_real_prometheus_scrapes_every_ztunnel(lab: dict[str, Any], tmp_path: Path) -> None:
    """Debian's Prometheus, in the fabric netns, scrapes 15020 on both nodes: one series per case.

    The three cases of §8: HBONE (both reporters, mutual_tls), plaintext from an
    out-of-mesh client (destination, unknown) and passthrough to an out-of-mesh server
    (source, unknown).
    """
    p = lab["pods"]
    echo(lab, "bookinfo/sleep-0", f"http://{p['bookinfo/ratings-0']['ip']}:9080/")
    echo(lab, "outside/sleep-0", f"http://{p['bookinfo/ratings-0']['ip']}:9080/")
    echo(lab, "bookinfo/sleep-0", f"http://{p['outside/echo-0']['ip']}:8080/")
    fabric = f"nl-{lab['name']}-fabric"
    targets = sorted(f"{n['ip']}:15020" for n in lab["nodes"].values())
    web = "172.18.0.1:19090"  # the fabric bridge's address (the lab CA listens there too)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                   "scrape_configs:\n  - job_name: ztunnel\n"
                   f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{fabric}", str(PROMETHEUS), f"--config.file={cfg}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address={web}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            up = _prometheus_query(fabric, web, 'up{job="ztunnel"} == 1')
            opened = _prometheus_query(fabric, web, "istio_tcp_connections_opened_total")
            if len(up) == len(targets) and {r["metric"]["instance"] for r in opened} == set(targets):
                break
            assert time.monotonic() < deadline, f"prometheus never scraped both ztunnels: up={up}"
            time.sleep(0.5)
        series = [r["metric"] for r in opened]
        assert all(m["app"] == "ztunnel" and m["request_protocol"] == "tcp" for m in series)

        def one(**want: str) -> dict[str, str]:
            hits = [m for m in series if all(m.get(k) == v for k, v in want.items())]
            assert hits, f"no series with {want}; have {series}"
            return hits[0]

        td = "spiffe://cluster.local/ns/bookinfo/sa"
        one(reporter="source", connection_security_policy="mutual_tls", source_workload="sleep",
            destination_workload="ratings", source_principal=f"{td}/sleep",
            destination_principal=f"{td}/bookinfo-ratings")
        one(reporter="destination", connection_security_policy="mutual_tls", source_workload="sleep",
            destination_service="ratings.bookinfo.svc.cluster.local", source_principal=f"{td}/sleep")
        one(reporter="destination", connection_security_policy="unknown", source_workload_namespace="outside",
            destination_workload="ratings", source_principal="unknown")
        one(reporter="source", connection_security_policy="unknown", destination_workload="echo",
            destination_workload_namespace="outside", destination_principal="unknown")
        for metric in ("istio_tcp_connections_closed_total", "istio_tcp_sent_bytes_total",
                       "istio_tcp_received_bytes_total"):
            got = _prometheus_query(fabric, web, f'{metric}{{connection_security_policy="mutual_tls"}} > 0')
            assert got, f"{metric}: no mutual_tls series above 0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


STRICT = """
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: bookinfo}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-sleep-to-ratings-1, namespace: bookinfo}
spec:
  action: DENY
  selector: {matchLabels: {app: ratings}}
  rules:
    - from: [{source: {principals: ["cluster.local/ns/bookinfo/sa/sleep"]}}]
      to: [{operation: {ports: ["9081"]}}]
"""


def test_strict_refuses_plaintext_but_not_hbone(up_lab: Callable[..., str], tmp_path: Path) -> None:
    """PeerAuthentication STRICT: the out-of-mesh client is refused at 15006; HBONE still works.

    The DENY policy names a port nobody uses, so it must not affect 9080 (a check that
    policy is evaluated per port, not that any DENY blocks everything).
    """
    f = tmp_path / "strict.yaml"
    f.write_text(TOPO.read_text() + STRICT)
    name = up_lab(f)
    status = json.loads(run_cli("status", name, "--json", check=True).stdout)
    ip = next(p["ip"] for p in status["pods"] if p["name"] == "ratings-0")
    lab = {"name": name}
    refused = curl(lab, "outside/sleep-0", f"http://{ip}:9080/")
    assert refused.returncode != 0 and '"peer"' not in refused.stdout, refused
    got = echo(lab, "bookinfo/sleep-0", f"http://{ip}:9080/")
    assert got["server"] == "ratings-0"
