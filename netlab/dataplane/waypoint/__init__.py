"""The waypoint proxy: HBONE in, L7 policy and routing, HBONE out (mesh-facts-2 §C2–§C4).

`python -m netlab.dataplane.waypoint --config FILE` runs in the waypoint pod's netns:

- `connect_terminate` on 15008: mutual TLS (client certificate required, same trust
  domain), CONNECT streams; only streams whose `:authority` is a Service that uses this
  waypoint, or a pod that does, are accepted (`target.py`);
- inside the tunnel, HTTP/1.1 (h11) or h2 with prior knowledge on HTTP ports, raw TCP on
  `tcp` ports (`http_chain.py`, `tcp_chain.py`);
- `connect_originate`: a second HBONE to the chosen pod, `podIP:15008` with
  `:authority podIP:targetPort`, with the waypoint's own certificate (`upstream.py`);
- telemetry as an Envoy waypoint: `reporter="waypoint"`, `istio_requests_total` and the
  histograms on HTTP chains, `istio_tcp_*` on TCP chains, and Envoy's access log, all
  from the shared `netlab.dataplane.envoy` package.
"""
