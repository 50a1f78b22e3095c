"""`netlab metrics` as a table: the exposition parsed, series named by their flow, filters."""

from __future__ import annotations

import pytest

from netlab.errors import NetlabError
from netlab.observe import metrics as m

LABELS = ('reporter="source",source_workload="sleep",source_canonical_service="sleep",'
          'source_workload_namespace="mesh",source_principal="spiffe://cluster.local/ns/mesh/sa/sleep",'
          'source_cluster="Kubernetes",destination_workload="echo-v1",destination_workload_namespace="mesh",'
          'destination_service="echo.mesh.svc.cluster.local",destination_cluster="Kubernetes",'
          'request_protocol="tcp",response_flags="-",connection_security_policy="mutual_tls"')
OPENMETRICS = f"""# HELP istio_tcp_sent_bytes The size of total bytes sent.
# TYPE istio_tcp_sent_bytes counter
istio_tcp_sent_bytes_total{{{LABELS}}} 453
# HELP istio_tcp_connections_opened The total number of TCP connections opened.
# TYPE istio_tcp_connections_opened counter
istio_tcp_connections_opened_total{{{LABELS}}} 1
istio_tcp_connections_opened_total{{{LABELS.replace('echo-v1', 'echo-v2')}}} 2
# EOF
"""


def test_openmetrics_is_parsed_into_samples() -> None:
    samples = m.parse("ztunnel/node-1", OPENMETRICS)
    assert [(s.name, s.value) for s in samples] == [("istio_tcp_sent_bytes_total", 453.0),
                                                    ("istio_tcp_connections_opened_total", 1.0),
                                                    ("istio_tcp_connections_opened_total", 2.0)]
    assert samples[0].family == "istio_tcp_sent_bytes" and samples[0].source == "ztunnel/node-1"


def test_a_series_is_named_by_its_flow_and_its_telling_labels() -> None:
    labels = m.parse("z", OPENMETRICS)[0].labels
    assert m.flow(labels) == "sleep.mesh → echo-v1.mesh"
    short = m.details(labels)
    assert short == ("connection_security_policy=mutual_tls destination_service=echo.mesh.svc.cluster.local "
                     "request_protocol=tcp")
    assert len(short) < len(LABELS) // 2
    assert "source_principal=spiffe://cluster.local/ns/mesh/sa/sleep" in m.details(labels, wide=True)


def test_filter_summary_and_raw() -> None:
    samples = m.parse("z", OPENMETRICS)
    assert {s.name for s in m.select(samples, "opened")} == {"istio_tcp_connections_opened_total"}
    assert m.summarize(m.select(samples, "opened")) == [
        {"source": "z", "name": "istio_tcp_connections_opened_total", "series": 2, "sum": 3.0}]
    raw = m.raw_filtered(OPENMETRICS, "sent")
    assert "istio_tcp_sent_bytes_total{" in raw and "opened" not in raw and raw.endswith("# EOF\n")


def test_prometheus_text_without_eof_is_read_too() -> None:
    text = "# TYPE up gauge\nup 1\n"
    assert [(s.name, s.value) for s in m.parse("x", text)] == [("up", 1.0)]


def test_garbage_is_one_clear_error() -> None:
    with pytest.raises(NetlabError, match="--raw"):
        m.parse("x", "this is { not metrics\n# EOF\n")
