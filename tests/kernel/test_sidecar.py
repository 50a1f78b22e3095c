"""Sidecars end to end, judged on what real clients and the kernel show: curl's status and
body, openssl's handshake, iptables-save in the pod, the sidecars' and ztunnel's logs, and
promtool on each sidecar's scrape; compared with Envoy's and Istio's documented behaviour
(mesh-facts-2 §A4, §D, §E; istio#55472).

Two labs from tests/kernel/topologies/sidecar.yaml, built once each with `lifecycle.up`:
PERMISSIVE (the default) and STRICT for `monitoring` (sidecar-strict.yaml given with it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from netlab import topology
from netlab.dataplane.ca import LabCA
from netlab.kernel import lifecycle, query
from netlab.plan import iptables_text as it
from tests import golden
from tests.conftest import run_cli

pytestmark = pytest.mark.kernel

TOPOS = Path(__file__).parent / "topologies"
BASE, STRICT = TOPOS / "sidecar.yaml", TOPOS / "sidecar-strict.yaml"
FQDN = "prometheus.monitoring.svc.cluster.local"
CLUSTER = f"outbound|9090||{FQDN}"
SNI = f"outbound_.9090_._.{FQDN}"
BODY_95 = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
MS_LINT = 'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"'


def _build(files: list[Path], tag: str) -> Iterator[dict[str, Any]]:
    name = f"ts{os.getpid() % 1000}{tag}"
    try:
        lifecycle.up(topology.load(files, name_override=name))
        status = query.status(query.record_of(name))
        yield {"name": name, "pods": {f"{p['namespace']}/{p['name']}": p for p in status["pods"]},
               "services": {f"{s['namespace']}/{s['name']}": s for s in status["services"]}}
    finally:
        if os.path.isdir(f"/run/netlab/{name}"):
            lifecycle.down(name)


@pytest.fixture(scope="module")
def permissive() -> Iterator[dict[str, Any]]:
    yield from _build([BASE], "p")


@pytest.fixture(scope="module")
def strict() -> Iterator[dict[str, Any]]:
    yield from _build([BASE, STRICT], "s")


@pytest.fixture(scope="module")
def tproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """STRICT, with the client and the server injected in TPROXY interception mode."""
    text = BASE.read_text()
    for app in ("curl", "prometheus, version: v1"):
        text = text.replace(f"    metadata: {{labels: {{app: {app}}}}}",
                            f"    metadata:\n      labels: {{app: {app}}}\n"
                            "      annotations: {sidecar.istio.io/interceptionMode: TPROXY}")
    assert text.count("interceptionMode: TPROXY") == 2
    variant = tmp_path_factory.mktemp("tproxy") / "sidecar-tproxy.yaml"
    variant.write_text(text)
    yield from _build([variant, STRICT], "t")


def sh(lab: dict[str, Any], pod: str, *argv: str) -> subprocess.CompletedProcess:
    return run_cli("exec", lab["name"], pod, "--", *argv, timeout=60)


def curl(lab: dict[str, Any], pod: str, url: str, host: str | None = None) -> tuple[int, str, str]:
    """(curl's exit code, status, body)."""
    args = ["curl", "-s", "-m", "10", "-w", "\n%{http_code}"] + (["-H", f"Host: {host}"] if host else []) + [url]
    res = sh(lab, pod, *args)
    body, _, code = res.stdout.rpartition("\n")
    return res.returncode, code, body


def log(lab: dict[str, Any], pod: str) -> list[str]:
    """The sidecar's access-log lines (Istio's TEXT format starts with `[`)."""
    paths = query.log_files(query.record_of(lab["name"]), f"sidecar/{pod}")
    return [ln for p in paths for ln in Path(p).read_text().splitlines() if ln.startswith("[")]


def last(lab: dict[str, Any], pod: str, needle: str) -> str:
    hits = [ln for ln in log(lab, pod) if needle in ln]
    assert hits, f"no access-log line with {needle!r} in {pod}'s sidecar:\n" + "\n".join(log(lab, pod)[-5:])
    return hits[-1]


def netns(lab: dict[str, Any], pod: str) -> str:
    return lab["pods"][pod]["netns"]


# -- injection: the rules and the proxy's user -------------------------------------------------
def test_rules_equal_the_golden_file_and_the_proxy_runs_as_1337(permissive: dict[str, Any]) -> None:
    saved = subprocess.run(["ip", "netns", "exec", netns(permissive, "grafana/curl-0"), "iptables-save"],
                           capture_output=True, text=True, check=True).stdout
    want = it.parse_all((golden.ISTIO / "sidecar-1.28" / "basic.golden").read_text())[0]
    assert it.parse(saved) == want
    rec = query.record_of(permissive["name"])
    (proc,) = [p for p in rec.processes if p.name == "sidecar/grafana/curl-0"]
    status = Path(f"/proc/{proc.pid}/status").read_text()
    assert re.search(r"^Uid:\s+1337\s+1337\s+1337\s+1337$", status, re.M), status
    assert re.search(r"^Gid:\s+1337\s+1337\s+1337\s+1337$", status, re.M), status


def test_tproxy_keeps_the_client_address_and_still_rejects_plaintext(tproxy: dict[str, Any]) -> None:
    """Under TPROXY the proxy runs as uid 0/gid 1337 and reaches the app from the client's own
    address (Envoy's original_src), not from 127.0.0.6; STRICT still closes plaintext."""
    saved = subprocess.run(["ip", "netns", "exec", netns(tproxy, "monitoring/prometheus-0"),
                            "iptables-save", "-t", "mangle"], capture_output=True, text=True).stdout
    assert "-j TPROXY --on-port 15006" in saved
    rec = query.record_of(tproxy["name"])
    (proc,) = [p for p in rec.processes if p.name == "sidecar/monitoring/prometheus-0"]
    status = Path(f"/proc/{proc.pid}/status").read_text()
    assert re.search(r"^Uid:\s+0\s", status, re.M) and re.search(r"^Gid:\s+1337\s", status, re.M)
    rc, code, body = curl(tproxy, "grafana/curl-0", "http://prometheus.monitoring:9090/tp")
    client_ip = tproxy["pods"]["grafana/curl-0"]["ip"]
    assert (rc, code) == (0, "200") and f'"peer": "{client_ip}:' in body
    served = last(tproxy, "monitoring/prometheus-0", '"GET /tp HTTP/1.1"')
    assert f" inbound|9090|| {client_ip}:" in served and served.endswith(f" {SNI} default")
    rc, code, body = curl(tproxy, "grafana/curl-0", "http://prometheus.monitoring:9090/tp",
                          "grafana-proxy.grafana:8080")
    assert (code, body) == ("503", BODY_95)
    assert f" {client_ip}:" in last(tproxy, "monitoring/prometheus-0", "NR filter_chain_not_found")


# -- outbound routing by Host --------------------------------------------------------------------
@pytest.mark.parametrize("pod,host", [
    ("monitoring/echo-tcp-0", "prometheus"),  # short name: same namespace only
    ("grafana/curl-0", "prometheus.monitoring"),
    ("grafana/curl-0", FQDN),
    ("grafana/curl-0", "{vip}"),
    ("grafana/curl-0", "prometheus.monitoring:9090"),
])
def test_domains_route_to_the_service_over_mtls(permissive: dict[str, Any], pod: str, host: str) -> None:
    vip = permissive["services"]["monitoring/prometheus"]["clusterIP"]
    host = host.format(vip=vip)
    rc, code, _ = curl(permissive, pod, f"http://{vip}:9090/d", host)
    assert (rc, code) == (0, "200")
    line = last(permissive, pod, f'"{host}"')
    assert f" {CLUSTER} " in line and line.endswith(" default")
    served = last(permissive, "monitoring/prometheus-0", f'"{host}"')
    assert " inbound|9090|| 127.0.0.6:" in served and served.endswith(f" {SNI} default")


def test_wrong_host_goes_to_passthrough_in_plaintext(permissive: dict[str, Any]) -> None:
    rc, code, _ = curl(permissive, "grafana/curl-0", "http://prometheus.monitoring:9090/w",
                       "grafana-proxy.grafana:8080")
    assert (rc, code) == (0, "200")
    line = last(permissive, "grafana/curl-0", '"grafana-proxy.grafana:8080"')
    assert " PassthroughCluster " in line and line.endswith(" allow_any")
    served = last(permissive, "monitoring/prometheus-0", '"grafana-proxy.grafana:8080"')
    assert served.endswith(" - default")  # no SNI: it arrived in plaintext
    by_pod = run_cli("logs", permissive["name"], "grafana/curl")  # the pod, as `exec` names it
    assert by_pod.returncode == 0 and line in by_pod.stdout


def test_strict_passthrough_is_istio_55472(strict: dict[str, Any]) -> None:
    rc, code, body = curl(strict, "grafana/curl-0", "http://prometheus.monitoring:9090/api/v1/query",
                          "grafana-proxy.grafana:8080")
    assert (rc, code, body) == (0, "503", BODY_95) and len(body) == 95
    line = last(strict, "grafana/curl-0", '"grafana-proxy.grafana:8080"')
    assert ' 503 UC upstream_reset_before_response_started{connection_termination} - "-" 0 95 ' in line
    assert " PassthroughCluster " in line and line.endswith(" allow_any")
    pod_ip = strict["pods"]["monitoring/prometheus-0"]["ip"]
    nr = last(strict, "monitoring/prometheus-0", "filter_chain_not_found")
    assert re.fullmatch(r'\[\S+\] "- - -" 0 NR filter_chain_not_found - "-" 0 0 0 - "-" "-" "-" "-" "-" - - '
                        + re.escape(f"{pod_ip}:9090") + r" \S+ - -", nr), nr


# -- out of the mesh --------------------------------------------------------------------------
def test_out_of_mesh_client_permissive_and_strict(permissive: dict[str, Any], strict: dict[str, Any]) -> None:
    assert curl(permissive, "outside/sleep-0", "http://prometheus.monitoring:9090/o")[:2] == (0, "200")
    rc, code, _ = curl(strict, "outside/sleep-0", "http://prometheus.monitoring:9090/o")
    assert rc in (52, 56) and code == "000"  # empty reply / connection reset: no HTTP at all
    client_ip = strict["pods"]["outside/sleep-0"]["ip"]
    assert f" {client_ip}:" in last(strict, "monitoring/prometheus-0", "NR filter_chain_not_found")


def test_sidecar_to_out_of_mesh_server_is_plaintext(permissive: dict[str, Any]) -> None:
    rc, code, body = curl(permissive, "grafana/curl-0", "http://web.outside/p")
    assert (rc, code) == (0, "200")
    web_ip = permissive["pods"]["outside/web-0"]["ip"]
    line = last(permissive, "grafana/curl-0", '"web.outside"')
    assert f'"{web_ip}:8080" outbound|80||web.outside.svc.cluster.local ' in line
    assert f'"peer": "{permissive["pods"]["grafana/curl-0"]["ip"]}:' in body  # straight from the pod


def test_openssl_s_client_with_and_without_a_lab_certificate(strict: dict[str, Any]) -> None:
    ip = strict["pods"]["monitoring/prometheus-0"]["ip"]
    req = "GET /tls HTTP/1.1\r\nHost: prometheus\r\nConnection: close\r\n\r\n"
    with tempfile.TemporaryDirectory() as d:
        cert = LabCA(f"/run/netlab/{strict['name']}/ca").issue_workload("outside", "default")
        for n, data in (("c", cert.cert_pem), ("k", cert.key_pem), ("r", cert.root_pem)):
            Path(d, f"{n}.pem").write_bytes(data)
        base = ["ip", "netns", "exec", netns(strict, "outside/sleep-0"), "openssl", "s_client", "-quiet",
                "-ign_eof", "-connect", f"{ip}:9090", "-servername", SNI, "-alpn", "istio-http/1.1",
                "-CAfile", f"{d}/r.pem"]
        without = subprocess.run(base, input=req, capture_output=True, text=True, timeout=30)
        with_cert = subprocess.run(base + ["-cert", f"{d}/c.pem", "-key", f"{d}/k.pem"], input=req,
                                   capture_output=True, text=True, timeout=30)
    assert "HTTP/1.1" not in without.stdout and without.returncode != 0
    assert with_cert.stdout.startswith("HTTP/1.1 200"), with_cert.stdout + with_cert.stderr


# -- ambient <-> sidecar ------------------------------------------------------------------------
def test_ambient_to_sidecar_is_hbone_with_unknown_source(strict: dict[str, Any]) -> None:
    rc, code, _ = curl(strict, "amb/sleep-0", "http://prometheus.monitoring:9090/amb")
    assert (rc, code) == (0, "200")  # STRICT, yet accepted: HBONE is mTLS
    ip = strict["pods"]["monitoring/prometheus-0"]["ip"]
    zt = "\n".join(Path(p).read_text() for p in query.log_files(query.record_of(strict["name"]), "ztunnel"))
    assert f'"dst.addr":"{ip}:15008"' in zt and f'"dst.hbone_addr":"{ip}:9090"' in zt
    assert last(strict, "monitoring/prometheus-0", '"GET /amb HTTP/1.1"').endswith(" - default")
    scrape = subprocess.run(["ip", "netns", "exec", netns(strict, "monitoring/prometheus-0"), "curl", "-s",
                             "http://127.0.0.1:15020/stats/prometheus"], capture_output=True, text=True).stdout
    series = [ln for ln in scrape.splitlines() if ln.startswith("istio_requests_total{")
              and 'source_principal="spiffe://cluster.local/ns/amb/sa/default"' in ln]
    assert series, scrape
    for want in ('reporter="destination"', 'connection_security_policy="mutual_tls"',
                 'source_workload="unknown"', 'source_canonical_service="unknown"',
                 'source_canonical_revision="latest"', 'source_workload_namespace="amb"'):
        assert want in series[0], series[0]


def test_sidecar_to_ambient_goes_over_hbone(permissive: dict[str, Any]) -> None:
    rc, code, _ = curl(permissive, "grafana/curl-0", "http://ratings.amb:9080/r")
    assert (rc, code) == (0, "200")
    ip = permissive["pods"]["amb/ratings-0"]["ip"]
    assert f'"envoy://connect_originate/{ip}:9080"' in last(permissive, "grafana/curl-0", '"ratings.amb:9080"')
    zt = "\n".join(Path(p).read_text() for p in query.log_files(query.record_of(permissive["name"]), "ztunnel"))
    inbound = [ln for ln in zt.splitlines() if '"direction":"inbound"' in ln and f'"dst.hbone_addr":"{ip}:9080"' in ln]
    assert inbound and '"src.identity":"spiffe://cluster.local/ns/grafana/sa/curl"' in inbound[-1]


# -- TCP and metrics ------------------------------------------------------------------------------
ECHO = ("import socket,sys; s=socket.create_connection(('echo-tcp.monitoring',9000)); s.sendall(b'hello\\n');"
        " d=b''\nwhile not d.endswith(b'\\n'): d+=s.recv(64)\nsys.stdout.write(d.decode()); s.close()")


def test_tcp_port_is_proxied_over_mtls_with_tcp_metrics(strict: dict[str, Any]) -> None:
    res = sh(strict, "grafana/curl-0", "python3", "-c", ECHO)
    assert res.stdout == "hello\n", res.stderr
    scrape = subprocess.run(["ip", "netns", "exec", netns(strict, "monitoring/echo-tcp-0"), "curl", "-s",
                             "http://127.0.0.1:15090/stats/prometheus"], capture_output=True, text=True).stdout
    opened = [ln for ln in scrape.splitlines() if ln.startswith("istio_tcp_connections_opened_total{")]
    assert opened and 'connection_security_policy="mutual_tls"' in opened[0]
    assert 'source_workload="curl"' in opened[0] and "istio_requests_total" not in scrape


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_every_sidecar_scrape_passes_promtool(permissive: dict[str, Any]) -> None:
    curl(permissive, "grafana/curl-0", "http://prometheus.monitoring:9090/m")
    for pod, p in permissive["pods"].items():
        if p.get("mode") != "sidecar":
            continue
        for port in (15020, 15090):
            text = subprocess.run(["ip", "netns", "exec", p["netns"], "curl", "-s", "-D", "-",
                                   f"http://127.0.0.1:{port}/stats/prometheus"],
                                  capture_output=True, text=True).stdout
            head, _, body = text.partition("\r\n\r\n")
            assert "Content-Type: text/plain; version=0.0.4" in head, (pod, head)
            res = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                                 text=True, timeout=60)
            problems = [ln for ln in res.stderr.splitlines() if ln.strip() and ln != MS_LINT]
            assert res.returncode in (0, 3) and not problems, (pod, port, res.stderr)
