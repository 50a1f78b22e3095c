"""Adapters to the shared policy and telemetry layers (netlab.dataplane.policy/telemetry).

Why an adapter: those modules belong to another engineer; ztunnel talks only to this
file, which maps the lab config (`WorkloadInfo`) onto their interfaces, so a change
over there is fixed in one place here.
"""

from __future__ import annotations

from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from netlab.dataplane import policy, telemetry
from netlab.dataplane.ztunnel.config import WorkloadInfo, ZtunnelConfig
from netlab.model import Resource

CLUSTER = "Kubernetes"


def evaluator(cfg: ZtunnelConfig) -> policy.Evaluator:
    res = [Resource(p["kind"], p["namespace"], p["name"], p["spec"], dict(p.get("labels", {})))
           for p in cfg.policies]
    return policy.Evaluator(res, root_namespace="istio-system")


def connection(src_ip: str, src_identity: str | None, dst_ip: str, dst_port: int,
               dst: WorkloadInfo) -> policy.Connection:
    return policy.Connection(src_ip=src_ip, src_identity=src_identity, dst_ip=dst_ip, dst_port=dst_port,
                             dst_namespace=dst.namespace, dst_labels=dict(dst.labels),
                             dst_service_account=dst.service_account)


def workload(w: WorkloadInfo | None, trust_domain: str) -> telemetry.Workload | None:
    if w is None:
        return None
    return telemetry.Workload.from_pod(w.namespace, w.name, w.deployment, w.service_account,
                                       dict(w.labels), trust_domain=trust_domain, ip=w.ip)


def record(**kw: Any) -> telemetry.ConnRecord:
    return telemetry.ConnRecord(**kw)


def make_telemetry(node: str, log_stream: TextIO) -> telemetry.ZtunnelTelemetry:
    return telemetry.ZtunnelTelemetry(CollectorRegistry(), node, log_stream)
