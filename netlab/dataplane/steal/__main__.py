"""`python -m netlab.dataplane.steal --mode steal|mirror --port P --agent-port T ...`"""

from __future__ import annotations

import argparse
import os
import sys

from netlab.dataplane.steal.agent import Options, run

DEFAULT_GID = 7777


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m netlab.dataplane.steal",
                                description="mirrord-agent stand-in: steal or mirror a TCP port")
    p.add_argument("--mode", choices=("steal", "mirror"), required=True)
    p.add_argument("--port", type=int, required=True, help="the app's port to steal/mirror")
    p.add_argument("--agent-port", type=int, default=0, help="where stolen traffic lands")
    p.add_argument("--agent-gid", type=int, default=None,
                   help="gid the OUTPUT chain skips (default: this process' gid)")
    p.add_argument("--ambient-aware", action="store_true",
                   help="mirrord >= 3.113: OUTPUT jump at position 1 (+ route_localnet)")
    p.add_argument("--privileged", action="store_true",
                   help="allowed to write net.ipv4.conf.all.route_localnet")
    a = p.parse_args(argv)
    if a.mode == "steal" and not a.agent_port:
        p.error("--agent-port is required with --mode steal")
    gid = a.agent_gid if a.agent_gid is not None else os.getgid() or DEFAULT_GID
    return Options(a.mode, a.port, a.agent_port, gid, a.ambient_aware, a.privileged)


if __name__ == "__main__":
    sys.exit(run(parse(sys.argv[1:])))
