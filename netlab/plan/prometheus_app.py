"""The built-in image `netlab/prometheus`: Debian's real Prometheus as a pod's app.

Why a real one: a lab whose upstream is "Prometheus" (istio#55472: Grafana →
prom-label-proxy → Prometheus) should be answered by Prometheus' own HTTP API, not by
an echo standing in for it. The pod runs the same launcher as the lab's Prometheus addon
(`netlab.telemetry.prometheus_process`), which starts `/usr/bin/prometheus` as its child
and says ready on netlab's ready pipe once `/-/ready` answers 200 (the readiness probe of
Istio's sample deployment). Prometheus listens on the container's first declared TCP port
(9090 when none is declared), on every address of the pod, so a sidecar reaches it from
127.0.0.6 as Envoy does.

The config is minimal: the global intervals and no scrape job. A scrape job would delay
readiness by Prometheus' 5-second discovery batch (docs/prometheus.md), and the pod is an
upstream to query, not the lab's metrics collector (that is `spec.prometheus`). Its TSDB
lives in the lab's state dir, so teardown removes it with the lab. A container's `args:`
go to Prometheus itself (after the launcher's `--`).

Pure: argv and config are data; the kernel writes the config where `{config}` says.
"""

from __future__ import annotations

import json

from netlab import mesh
from netlab.plan import naming
from netlab.plan.addons.prometheus import BINARY

IMAGE = "netlab/prometheus"
LAUNCHER = "netlab.telemetry.prometheus_process"
SCRAPE_INTERVAL = "15s"  # Prometheus' own default; nothing is scraped anyway


def config() -> str:
    """prometheus.yml as JSON (a YAML subset): intervals only, no scrape job."""
    return json.dumps({"global": {"scrape_interval": SCRAPE_INTERVAL,
                                  "evaluation_interval": SCRAPE_INTERVAL}}, indent=1)


def storage_dir(lab: str, namespace: str, pod: str, container: str) -> str:
    """Where the pod's TSDB lives: under the lab's state dir, removed with the lab."""
    return f"{naming.state_dir(lab)}/apps/{namespace}/{pod}/{container}/prometheus"


def port(ports: list[int]) -> int:
    """The port Prometheus serves: the first declared TCP containerPort, else 9090."""
    return ports[0] if ports else mesh.PROMETHEUS_PORT


def argv(python: str, lab: str, namespace: str, pod: str, container: str, ports: list[int],
         args: list[str]) -> tuple[str, ...]:
    """The launcher's command line; `args` are passed to Prometheus after `--`."""
    return (python, "-m", LAUNCHER, "--binary", BINARY, "--config", "{config}",
            "--storage", storage_dir(lab, namespace, pod, container),
            "--listen", f"0.0.0.0:{port(ports)}", *(("--", *args) if args else ()))
