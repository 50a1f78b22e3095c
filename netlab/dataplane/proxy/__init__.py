"""The core every in-pod proxy stands on (ztunnel now; the sidecar and the waypoint next).

- `lifecycle`: one process lifecycle and readiness signal, for every process netlab starts;
- `sockets`: listeners inside a pod netns (SO_MARK, IP_TRANSPARENT), the original
  destination, marked outbound sockets and spoofed (client-IP) sockets;
- `relay`: the byte-counting relay with half-close;
- `certs`: the certificate client (bootstrap, then workload certificates over the CA API);
- `config`: loading the config snapshot;
- `admin`: the metrics and readiness ports.

What differs between proxies (routing, policy, telemetry decisions) stays in their
own packages. This package imports nothing heavy at import time: the apps use the
lifecycle and start dozens of times per lab.
"""
