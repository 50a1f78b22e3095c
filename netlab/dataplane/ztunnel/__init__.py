"""netlab's ztunnel: the per-node ambient proxy (mesh-facts §3–§8).

Run as `python -m netlab.dataplane.ztunnel --config FILE` inside a node netns. It
opens its 15001/15006/15008 listeners inside each ambient pod's netns on its node,
tunnels outbound TCP as HBONE, terminates inbound HBONE and plaintext, enforces L4
policy on the server side and reports `istio_tcp_*` metrics on 15020 in the node netns.
Differences from the real ztunnel are listed in docs/ambient.md.
"""
