"""Every variant of strict-host-header through the CLI (one `netlab lab run`): the verdicts,
and the evidence behind them compared with what Istio and Envoy do (mesh-facts-2 §D, §E).

One run for the module keeps the suite fast: the six variants build and tear down their own
instances in about 10 s.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.kernel

LAB = "strict-host-header"
FQDN = "prometheus.monitoring.svc.cluster.local"
CLUSTER = f"outbound|9090||{FQDN}"
SNI = f"outbound_.9090_._.{FQDN}"
BODY_95 = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
KEPT_HOST = "prom-label-proxy.monitoring:8080"
OUTCOMES = {"permissive": ("works", True), "strict": ("reproduced", False),
            "annotation": ("broken", False), "fix-rewrite-host": ("fixed", True),
            "fix-app-protocol-tcp": ("fixed", True), "fix-unnamed-port": ("fixed", True)}


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    res = run_cli("lab", "run", LAB, "--json", timeout=180)
    data = json.loads(res.stdout)
    by_variant = {r["variant"]: r for r in data["results"]}
    bad = {v: ([d for d in r["verdicts"] if not d["held"]], r["error"]) for v, r in by_variant.items()
           if not r["ok"]}
    assert not bad, json.dumps(bad, indent=1)
    assert res.returncode == 0 and data["ok"]
    assert list(by_variant) == list(OUTCOMES)
    return by_variant


def _hop(ev: dict[str, Any]) -> list[dict[str, Any]]:
    return [x for x in ev["logs"]["label_proxy"] if x["downstream_local_address"].endswith(":9090")]


def _series(ev: dict[str, Any], who: str, name: str, **labels: str) -> float:
    return sum(s["value"] for s in ev["metrics"][who] if s["name"] == name
               and all(s["labels"].get(k) == v for k, v in labels.items()))


@pytest.mark.parametrize("variant", list(OUTCOMES))
def test_outcome_and_teardown(results: dict[str, dict[str, Any]], variant: str) -> None:
    r = results[variant]
    word, good = OUTCOMES[variant]
    assert r["expected"]["word"] == r["observed"]["word"] == word
    assert r["observed"]["good"] is good and r["observed"]["as_expected"]
    assert r["instance"].startswith("shh")
    assert not os.path.isdir(f"/run/netlab/{r['instance']}")
    assert not any(n.startswith(f"nl-{r['instance']}-") for n in os.listdir("/run/netns"))


def test_strict_is_the_field_report(results: dict[str, dict[str, Any]]) -> None:
    ev = results["strict"]["evidence"]
    assert (ev["client"]["exit_code"], ev["client"]["http_code"]) == (0, "503")
    assert ev["client"]["body"] == BODY_95 and ev["client"]["body_bytes"] == 95
    for x in _hop(ev):  # Envoy's line for a reset before headers on the passthrough route
        assert (x["response_code"], x["response_flags"], x["upstream_cluster"], x["route_name"]) == \
            ("503", "UC", "PassthroughCluster", "allow_any")
        assert x["response_code_details"] == "upstream_reset_before_response_started{connection_termination}"
        assert x["authority"] == KEPT_HOST and x["bytes_sent"] == "95"
    nr = ev["logs"]["prometheus"]
    assert nr and all(x["line"].split("] ", 1)[1].startswith('"- - -" 0 NR filter_chain_not_found - "-" 0 0 ')
                      for x in nr)
    assert _series(ev, "label_proxy", "istio_requests_total", reporter="source",
                   destination_service_name="PassthroughCluster", response_flags="UC") == len(_hop(ev))
    assert not [s for s in ev["metrics"]["prometheus"] if s["name"] == "istio_requests_total"]
    assert ev["wire"]["query_in_clear"] and ev["wire"]["bytes_from_server"] == 0


def test_permissive_works_in_plaintext(results: dict[str, dict[str, Any]]) -> None:
    ev = results["permissive"]["evidence"]
    assert ev["client"]["http_code"] == "200" and '"status":"success"' in ev["client"]["body"]
    (hop,) = _hop(ev)
    assert (hop["upstream_cluster"], hop["route_name"], hop["authority"]) == \
        ("PassthroughCluster", "allow_any", KEPT_HOST)
    assert any(f"Host: {KEPT_HOST}" in r for r in ev["wire"]["requests_in_clear"])
    assert ev["wire"]["replies_in_clear"] == ["HTTP/1.1 200 OK"] and not ev["wire"]["client_hellos"]
    assert _series(ev, "prometheus", "istio_requests_total", reporter="destination",
                   connection_security_policy="none") >= 1


def test_annotation_is_kept_and_ignored(results: dict[str, dict[str, Any]]) -> None:
    ev = results["annotation"]["evidence"]
    assert ev["declared"]["service"]["annotations"] == {"networking.istio.io/service-protocol": "tcp"}
    assert ev["proxy_config"] == results["strict"]["evidence"]["proxy_config"]
    assert ev["client"]["body"] == BODY_95


@pytest.mark.parametrize("variant,authority", [("fix-rewrite-host", f"{FQDN}:9090"),
                                               ("fix-unnamed-port", KEPT_HOST)])
def test_http_fixes_use_the_service_route_over_mtls(results: dict[str, dict[str, Any]], variant: str,
                                                    authority: str) -> None:
    ev = results[variant]["evidence"]
    assert ev["client"]["http_code"] == "200" and '"resultType":"vector"' in ev["client"]["body"]
    (hop,) = _hop(ev)
    assert (hop["upstream_cluster"], hop["route_name"], hop["authority"]) == (CLUSTER, "default", authority)
    (served,) = ev["logs"]["prometheus"]
    assert served["requested_server_name"] == SNI and served["upstream_cluster"] == "inbound|9090||"
    hellos = ev["wire"]["client_hellos"]
    assert hellos and all(h == {"sni": SNI, "alpn": ["istio-http/1.1", "istio", "http/1.1"]} for h in hellos)
    assert not ev["wire"]["requests_in_clear"] and not ev["wire"]["answer_in_clear"]
    assert _series(ev, "prometheus", "istio_requests_total", reporter="destination",
                   connection_security_policy="mutual_tls",
                   source_principal="spiffe://cluster.local/ns/monitoring/sa/prom-label-proxy") == 1


def test_tcp_fix_is_tcp_proxied_over_mtls(results: dict[str, dict[str, Any]]) -> None:
    ev = results["fix-app-protocol-tcp"]["evidence"]
    assert ev["client"]["http_code"] == "200"
    (hop,) = _hop(ev)
    assert hop["line"].split("] ", 1)[1].startswith('"- - -" 0 - - ')
    assert hop["upstream_cluster"] == CLUSTER and hop["route_name"] is None
    assert [h["alpn"] for h in ev["wire"]["client_hellos"]] == [["istio-peer-exchange", "istio"]]
    assert _series(ev, "prometheus", "istio_tcp_connections_opened_total", reporter="destination",
                   connection_security_policy="mutual_tls") >= 1
    assert not [s for s in ev["metrics"]["prometheus"] if s["name"] == "istio_requests_total"]
