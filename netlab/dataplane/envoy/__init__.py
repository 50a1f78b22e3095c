"""Envoy's behaviour as istiod configures it, shared by every Envoy-shaped proxy netlab runs.

The sidecar (`netlab/dataplane/sidecar/`) and the waypoint both answer, log and count the
way Envoy does with Istio's config, so those facts live here once, free of any one
proxy's routing:

- `flags`: response flags in Envoy's order (`UF,URX`) and their meaning;
- `local_reply`: the replies Envoy makes itself (the 95-byte `connection termination` 503,
  `retried and the latest reset reason: ...`, `no healthy upstream`, 404 `NR`);
- `accesslog`: Istio's default TEXT access-log line (1.23+) and its JSON form;
- `stats`: `istio_stats` — the Istio standard metrics with Envoy's label semantics;
- `headers`: what Envoy's HTTP connection manager and router do to requests and responses
  (x-request-id, x-forwarded-proto, x-envoy-attempt-count, x-envoy-upstream-service-time,
  x-forwarded-client-cert);
- `retry`: Istio's default retry policy;
- `conn_pool`: the HTTP/1.1 upstream connection pool (per cluster, host and source);
- `istio_tls`: TLS the way Istio's sidecars speak it to each other (SNI, ALPN lists, SANs,
  TLS 1.2-1.3) and the `tls_inspector` that reads a ClientHello before any chain is chosen.

Facts and their upstream sources are in docs/sidecar.md.
"""
