"""Scrape a proxy's Prometheus endpoint from inside the namespace it listens in, and read it.

Why from inside: ztunnel serves :15020 in its node netns, where a Prometheus on the
host network of a real node would find it; the socket is created in that netns and
used from here, so no process is forked per scrape.

Why read it: one Istio series carries ~23 labels, about 1,000 characters a line. The
table view (`netlab metrics`) parses the exposition with prometheus_client's own
parsers (OpenMetrics, as ztunnel serves it, else Prometheus text) and names each
series by what a person asks first: who talked to whom, as which reporter.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from netlab.errors import NetlabError
from netlab.kernel import netns as nsmod
from netlab.mesh import METRICS_PORT

__all__ = ["scrape", "http_get", "METRICS_PORT", "Sample", "parse", "select", "summarize", "raw_filtered",
           "flow", "details"]


def scrape(netns: str, port: int = METRICS_PORT, timeout: float = 5.0) -> str:
    """GET /metrics on 127.0.0.1:`port` in `netns`; the exposition text."""
    return http_get(netns, port, "/metrics", timeout)


def http_get(netns: str, port: int, path: str, timeout: float = 5.0) -> str:
    """GET `path` on 127.0.0.1:`port` in `netns` (an admin port); the body, or NetlabError."""
    with nsmod.entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", port))
        except OSError as e:
            raise NetlabError(f"nothing answers on 127.0.0.1:{port} in {netns} ({e.strerror}); "
                              "is the process running? `netlab status` shows its state") from e
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        status = head.split(b"\r\n")[0].decode(errors="replace")
        raise NetlabError(f"{netns}:{port}{path} answered {status!r}")
    return body.decode()


@dataclass(frozen=True)
class Sample:
    """One series of one scrape: where it came from, its name, labels and value."""

    source: str  # what was scraped, e.g. "ztunnel/node-1"
    family: str  # the metric family (`istio_tcp_sent_bytes`)
    name: str  # the sample's own name (`istio_tcp_sent_bytes_total`)
    labels: dict[str, str]
    value: float


def parse(source: str, text: str) -> list[Sample]:
    """Every sample in an exposition: OpenMetrics when it ends with `# EOF`, else Prometheus text."""
    if text.rstrip().endswith("# EOF"):
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families  # type: ignore[assignment]
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as e:
        raise NetlabError(f"{source}: its metrics are not valid exposition text ({e}); "
                          "`netlab metrics --raw` shows them as served") from e
    return [Sample(source, f.name, s.name, dict(s.labels), float(s.value)) for f in families for s in f.samples]


def select(samples: list[Sample], name_filter: str | None) -> list[Sample]:
    """The samples whose family or sample name contains `name_filter` (all without one)."""
    if not name_filter:
        return samples
    return [s for s in samples if name_filter in s.name or name_filter in s.family]


def raw_filtered(text: str, name_filter: str | None) -> str:
    """The exposition text, with only the lines of families whose name contains `name_filter`."""
    if not name_filter:
        return text
    keep = []
    for line in text.splitlines(keepends=True):
        if line.startswith("# HELP ") or line.startswith("# TYPE ") or line.startswith("# UNIT "):
            name = line.split()[2]
        elif line.startswith("#"):
            if line.startswith("# EOF"):
                keep.append(line)
            continue
        else:
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if name_filter in name:
            keep.append(line)
    return "".join(keep)


# Labels folded into the flow column, or too constant to be worth a column of their own.
_FLOW = ("source_workload", "source_workload_namespace", "destination_workload",
         "destination_workload_namespace", "reporter")
_DULL = {"source_canonical_service", "source_canonical_revision", "source_app", "source_version",
         "source_cluster", "destination_canonical_service", "destination_canonical_revision",
         "destination_app", "destination_version", "destination_cluster", "destination_service_name",
         "destination_service_namespace", "source_principal", "destination_principal"}


def flow(labels: dict[str, str]) -> str:
    """`sleep.mesh → echo-v1.mesh`: Istio's source and destination workloads, or ""."""
    src = _workload(labels, "source")
    dst = _workload(labels, "destination")
    return f"{src} → {dst}" if src or dst else ""


def _workload(labels: dict[str, str], side: str) -> str:
    name = labels.get(f"{side}_workload", "")
    ns = labels.get(f"{side}_workload_namespace", "")
    if not name and not ns:
        return ""
    return f"{name or 'unknown'}.{ns or 'unknown'}"


def details(labels: dict[str, str], wide: bool = False) -> str:
    """The labels not in the flow column (all of them when `wide`), `k=v` joined by spaces.

    Without `wide`, labels that repeat what the flow says (canonical names, apps,
    versions, clusters, principals) and values of `unknown` or `-` are left out."""
    shown = {k: v for k, v in labels.items() if k not in _FLOW or wide}
    if not wide:
        shown = {k: v for k, v in shown.items() if k not in _DULL and v not in ("unknown", "-", "")}
    return " ".join(f"{k}={v}" for k, v in sorted(shown.items()))


def summarize(samples: list[Sample]) -> list[dict[str, object]]:
    """Per source and sample name: how many series, and the sum of their values."""
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for s in samples:
        row = rows.setdefault((s.source, s.name), {"source": s.source, "name": s.name, "series": 0, "sum": 0.0})
        row["series"] = int(row["series"]) + 1  # type: ignore[call-overload]
        row["sum"] = float(row["sum"]) + s.value  # type: ignore[arg-type]
    return list(rows.values())
