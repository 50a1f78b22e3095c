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

from netlab.dataplane.apps._cli import parser

# What netlab's process zygote (netlab/kernel/zygote.py) imports once, before it forks
# each pod's app: every image's module, so no forked app imports anything at start.
# `_cli` and `http_echo` also define `warm()`, which the zygote runs once before forking.
PRELOAD = ("netlab.dataplane.apps._cli", "netlab.dataplane.apps._serve",
           "netlab.dataplane.apps.http_echo", "netlab.dataplane.apps.tcp_echo",
           "netlab.dataplane.apps.reverse_proxy")


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
