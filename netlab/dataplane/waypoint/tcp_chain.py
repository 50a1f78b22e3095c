"""A TCP chain inside one tunnel: network RBAC, one endpoint, bytes both ways.

On a `tcp` port the waypoint is a TCP proxy (Envoy `tcp_proxy` through
`connect_originate`): the AuthorizationPolicies are applied once per connection with no
HTTP attributes (so an ALLOW rule that needs a method or path matches nothing, as in
Istio's network RBAC), one endpoint is picked for the whole connection, and only
`istio_tcp_*` are counted (never `istio_requests_total`), with `request_protocol="tcp"`.
A denied connection is closed (Envoy's network RBAC filter), logged with its details.
"""

from __future__ import annotations

import asyncio
import logging
import time

from netlab import mesh
from netlab.dataplane import hbone
from netlab.dataplane.envoy import flags as F
from netlab.dataplane.envoy.accesslog import AccessEntry
from netlab.dataplane.l7 import authz
from netlab.dataplane.proxy.relay import CountingReader, CountingWriter, pipe
from netlab.dataplane.waypoint import upstream
from netlab.dataplane.waypoint.context import Downstream, Env, cluster_name, edge
from netlab.dataplane.waypoint.target import Target

log = logging.getLogger("waypoint")


async def serve(env: Env, down: Downstream, target: Target, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    entry = AccessEntry(time.time(), downstream_local_address=down.local,
                        downstream_remote_address=down.remote)
    svc = target.service
    fqdn = svc.fqdn if svc else None
    decision = authz.authorize(env.cfg.policies, authz.Target(
        svc.namespace if svc else None, svc.name if svc else None, env.me.namespace,
        env.me.labels.get(mesh.GATEWAY_NAME_LABEL, "")), authz.L7Request(
            method="", path="", host="", src_ip=down.peer[0], src_identity=down.identity,
            dst_ip=target.ip, dst_port=target.port))
    no_upstream = edge(env, down, None, fqdn)
    if not decision.allowed:
        entry.connection_termination_details = decision.details
        env.stats.tcp_opened(no_upstream)
        env.stats.tcp_closed(no_upstream, 0, 0)
        env.log.write(entry.finish())
        await upstream.close_quietly(writer)
        return
    picked = upstream.pick(env.cfg, fqdn, target.port) if fqdn else upstream.direct(env.cfg, target.ip, target.port)
    if fqdn:
        entry.upstream_cluster = cluster_name(target.port, "tcp", fqdn)
    if picked is None:
        entry.response_flags = F.NO_HEALTHY_UPSTREAM
        env.stats.tcp_opened(no_upstream, entry.response_flags)
        env.stats.tcp_closed(no_upstream, 0, 0, entry.response_flags)
        env.log.write(entry.finish())
        await upstream.close_quietly(writer)
        return
    entry.upstream_host = picked.upstream_host
    e = edge(env, down, picked.workload, fqdn)
    env.stats.tcp_opened(e)
    try:
        up_r, up_w, relay = await upstream.open_tunnel(
            env.pool, env.identity, picked, env.trust_domain,
            hbone.make_headers(forwarded_for=down.peer, forwarded_host=fqdn))
    except Exception as err:  # noqa: BLE001 - non-200, dial, TLS: the connection is closed
        log.info("connect_originate to %s failed: %s", picked.address, err)
        entry.response_flags = F.UPSTREAM_CONNECTION_FAILURE
        env.stats.tcp_closed(e, 0, 0)
        env.log.write(entry.finish())
        await upstream.close_quietly(writer)
        return
    down_r, down_w = CountingReader(reader), CountingWriter(writer)
    error = await pipe(down_r, down_w, up_r, up_w)
    await asyncio.gather(relay, return_exceptions=True)
    if error:
        entry.connection_termination_details = error
    entry.bytes_received, entry.bytes_sent = down_r.count, down_w.count
    env.stats.tcp_closed(e, down_r.count, down_w.count)
    env.log.write(entry.finish())
