"""Facts of the Istio mesh that every layer shares: ports, marks, names, the SPIFFE URI.

One definition each, at the bottom of the package, because the planner writes them
into iptables rules and configs while the proxies open sockets with them: a port or
mark written twice is a port or mark that can drift. Nothing here imports netlab.

Sources: istio-cni `cni/pkg/iptables` (marks, table, rule priority), istio-iptables'
injected arguments and Envoy's bootstrap (ports), ztunnel `src/config.rs`
(mesh-facts §1–§5).
"""

from __future__ import annotations

# -- ports -----------------------------------------------------------------------------
ADMIN_PORT = 15000  # Envoy admin
OUTBOUND_PORT = 15001  # outbound capture (ztunnel and sidecar alike)
INBOUND_PORT = 15006  # inbound plaintext capture
HBONE_PORT = 15008  # inbound HBONE; a proxy listens here itself, never redirected
CA_PORT = 15012  # istiod's CA
METRICS_PORT = 15020  # merged Prometheus metrics (ztunnel's in the node netns)
HEALTH_PORT = 15021  # readiness
DNS_PROXY_PORT = 15053  # the in-pod DNS proxy the capture rules redirect port 53 to
ENVOY_STATS_PORT = 15090  # Envoy's own stats
PROMETHEUS_PORT = 9090  # the Prometheus addon's web/API port (Istio's samples/addons Service)

SIDECAR_PORTS = (ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT, HBONE_PORT, METRICS_PORT, HEALTH_PORT,
                 ENVOY_STATS_PORT)
"""The ports an injected sidecar opens in its pod (15008 only when it listens for HBONE)."""

PROXY_PORTS = frozenset({ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT, HBONE_PORT, CA_PORT,
                         METRICS_PORT, HEALTH_PORT, DNS_PROXY_PORT, ENVOY_STATS_PORT})
"""Every port a proxy or istiod claims: an app (or a Service target) must not use them."""

# Ports ztunnel refuses as a destination (a call to its own listeners is a self-call).
ZTUNNEL_POD_PORTS = (OUTBOUND_PORT, INBOUND_PORT, HBONE_PORT)

# -- marks and policy routing (istio-cni in-pod) -----------------------------------------
PROXY_MARK = 0x539  # 1337: SO_MARK on every socket a proxy opens in a pod
PROXY_MARK_MASK = 0xFFF
SIDECAR_OUTBOUND_MARK = 0x53A  # 1338: istio-iptables' OutboundMark (proxy traffic out lo, TPROXY)
CONN_MARK = 0x111  # connmark (and 1.23's tproxy-mark) of connections the proxy accepted
CONN_MARK_MASK = 0xFFF
RESTORE_MASK = 0xFFFFFFFF  # CONNMARK --restore-mark --nfmask/--ctmask
INPOD_ROUTE_TABLE = 100  # `local 0.0.0.0/0 dev lo table 100`
INPOD_RULE_PRIORITY = 32764  # `ip rule add fwmark 0x111/0xfff pref 32764 lookup 100`
SIDECAR_TPROXY_ROUTE_TABLE = 133  # istio-iptables InboundTProxyRouteTable (TPROXY mode)
SIDECAR_TPROXY_RULE_PRIORITY = 32765  # the kernel's pick for istio-iptables' unprioritised rule

# -- the proxy's user (sidecar capture exempts it by uid/gid) -----------------------------
PROXY_UID = 1337
PROXY_GID = 1337

# -- names -----------------------------------------------------------------------------
DNS_DOMAIN = "cluster.local"  # the cluster DNS domain (Services are <svc>.<ns>.svc.<domain>)
DEFAULT_TRUST_DOMAIN = "cluster.local"
TELEMETRY_CLUSTER = "Kubernetes"  # source_cluster/destination_cluster, baggage k8s.cluster.name
ROOT_NAMESPACE = "istio-system"  # mesh-wide policies live here; so do ztunnel and istiod

# Labels and annotations Istio reads.
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"  # "ambient" or "none", on a namespace or pod
INJECTION_LABEL = "istio-injection"  # "enabled" on a namespace: sidecar injection
SIDECAR_INJECT = "sidecar.istio.io/inject"  # per pod: "true"/"false"
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
BYPASS_INBOUND_ANNOTATION = "ambient.istio.io/bypass-inbound-capture"
TUNNEL_LABEL = "networking.istio.io/tunnel"  # "http": the pod accepts HBONE itself
# The ztunnel DaemonSet's pod label that Prometheus' pod-label relabelling turns into the
# `app="ztunnel"` Kiali filters on (mesh-facts-2 §A4, §G6).
ZTUNNEL_POD_LABELS = {"app": "ztunnel"}
TLS_MODE_LABEL = "security.istio.io/tlsMode"  # "istio" on injected pods: endpoints get auto-mTLS
# Sidecar injection annotations netlab honours (istio `manifests/.../injection-template.yaml`).
INTERCEPTION_MODE_ANNOTATION = "sidecar.istio.io/interceptionMode"  # REDIRECT | TPROXY
EXCLUDE_INBOUND_PORTS_ANNOTATION = "traffic.sidecar.istio.io/excludeInboundPorts"
EXCLUDE_OUTBOUND_PORTS_ANNOTATION = "traffic.sidecar.istio.io/excludeOutboundPorts"
INCLUDE_OUTBOUND_RANGES_ANNOTATION = "traffic.sidecar.istio.io/includeOutboundIPRanges"
EXCLUDE_OUTBOUND_RANGES_ANNOTATION = "traffic.sidecar.istio.io/excludeOutboundIPRanges"

# Waypoints (istio/istio@1.24.0 pilot/pkg/config/kube/gateway/deploymentcontroller.go,
# files/waypoint.yaml; mesh-facts-2 §C1).
WAYPOINT_GATEWAY_CLASS = "istio-waypoint"
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"  # service (default) | workload | all | none
WAYPOINT_FOR_DEFAULT = "service"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_MANAGED_LABEL = "gateway.istio.io/managed"
WAYPOINT_MANAGED_VALUE = "istio.io-mesh-controller"
CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"
NODE_NAME_ANNOTATION = "netlab.dev/node-name"  # netlab's: pins a generated (waypoint) pod

SPIFFE_SCHEME = "spiffe://"


def spiffe_uri(trust_domain: str, namespace: str, service_account: str) -> str:
    """`spiffe://<td>/ns/<ns>/sa/<sa>`: a workload's identity, as in its certificate's URI SAN."""
    return f"{SPIFFE_SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"


def parse_spiffe_uri(uri: str) -> tuple[str, str, str] | None:
    """(trust domain, namespace, service account) of a SPIFFE URI; None for anything else."""
    if not uri.startswith(SPIFFE_SCHEME):
        return None
    parts = uri[len(SPIFFE_SCHEME):].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        return None
    return parts[0], parts[2], parts[4]


def service_fqdn(name: str, namespace: str, domain: str = DNS_DOMAIN) -> str:
    return f"{name}.{namespace}.svc.{domain}"
