"""netlab's sidecar: an Envoy-shaped proxy in one injected pod, serving istiod's config.

Run as `python -m netlab.dataplane.sidecar --config FILE` in the pod's netns, as uid/gid
1337 (REDIRECT; the capture rules exempt it by owner) or uid 0 / gid 1337 with NET_ADMIN
(TPROXY), as Istio's injection template runs istio-proxy. FILE is a `netlab.xds.SidecarSnapshot`:
the listeners, route configs and clusters istiod would push. The proxy interprets them
the way Envoy does:

- `virtualOutbound` (15001): the original destination picks `<vip>_<port>` or
  `0.0.0.0_<port>`; listener filters peek (tls/http inspector); a filter chain runs an HTTP
  connection manager (route by Host, retries, local replies) or a TCP proxy; endpoints are
  reached in Istio mTLS, plaintext or HBONE as each endpoint says (`chains`, `routing`,
  `upstream`, `http_chain`, `tcp_chain`, `outbound`);
- `virtualInbound` (15006): chains matched on transport and ALPN per PeerAuthentication
  mode; no match → `NR filter_chain_not_found` and the connection closed; the app is reached
  from 127.0.0.6 (`inbound`);
- `connect_terminate` (15008) when the pod carries the tunnel label: HBONE terminated, then
  the `main_internal` chains (already decrypted, no metadata exchange);
- access logs on stdout (Istio's TEXT format), `istio_*` metrics on 15020 and 15090,
  readiness on 15021 (`proxy`).

The Envoy facts shared with the waypoint live in `netlab/dataplane/envoy/`; what differs
from Envoy is listed in docs/sidecar.md.
"""
