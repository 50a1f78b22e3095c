"""`python -m netlab.dataplane.apps <image> [options]`: start one built-in image.

Only the chosen image's module is imported, after argument parsing, to keep startup
short when a lab starts dozens of pods.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Sequence

IMAGES = ("http-echo", "tcp-echo", "reverse-proxy", "sleep")
# What netlab's process zygote (netlab/kernel/zygote.py) imports once, before it forks
# each pod's app: every image's module, so no forked app imports anything at start.
PRELOAD = ("netlab.dataplane.apps._serve", "netlab.dataplane.apps.http_echo",
           "netlab.dataplane.apps.tcp_echo", "netlab.dataplane.apps.reverse_proxy")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m netlab.dataplane.apps",
                                description="netlab built-in workload images (docs/apps.md)")
    sub = p.add_subparsers(dest="image", required=True, metavar="IMAGE")

    def common(sp: argparse.ArgumentParser, many: bool) -> None:
        sp.add_argument("--port", type=int, required=True, action="append" if many else None,
                        help="port to listen on" + (" (repeatable)" if many else ""))
        sp.add_argument("--listen", default="0.0.0.0", help="bind address (default 0.0.0.0)")

    sp = sub.add_parser("http-echo", help="HTTP/1.1 echo: 200 + JSON of the request")
    common(sp, many=True)
    sp.add_argument("--name", default=None, help="server name in replies (default: hostname)")
    sp = sub.add_parser("tcp-echo", help="echo bytes back; close after the client's FIN")
    common(sp, many=True)
    sp.add_argument("--prefix", default="", help="text put before every reply chunk")
    sp = sub.add_parser("reverse-proxy", help="Go-style single-host reverse proxy")
    common(sp, many=True)
    sp.add_argument("--upstream", required=True, help="http://HOST:PORT[/path]")
    sp.add_argument("--rewrite-host-header-to", default=None, metavar="HOST",
                    help="send this Host upstream instead of the incoming one")
    sub.add_parser("sleep", help="no server: wait for SIGTERM (idle client pod)")
    return p


async def _start(args: argparse.Namespace) -> None:
    from netlab.dataplane.apps import _serve

    if args.image == "http-echo":
        from netlab.dataplane.apps import http_echo
        name = args.name or socket.gethostname()
        await _serve.run(args.image, lambda: http_echo.serve(args.port, name, args.listen))
    elif args.image == "tcp-echo":
        from netlab.dataplane.apps import tcp_echo
        await _serve.run(args.image, lambda: tcp_echo.serve(args.port, args.prefix,
                                                            args.listen))
    elif args.image == "reverse-proxy":
        from netlab.dataplane.apps import reverse_proxy
        await _serve.run(args.image, lambda: reverse_proxy.serve(
            args.port, args.upstream, args.rewrite_host_header_to, args.listen))
    else:
        await _serve.run(args.image, None)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        asyncio.run(_start(args))
    except (OSError, ValueError) as e:
        print(f"{args.image}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
