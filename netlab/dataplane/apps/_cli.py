"""The built-in images' command line, kept outside `__main__` so it is built once.

Why a module of its own: the process zygote (netlab/kernel/zygote.py) runs each app's
`__main__` afresh in every forked child, so a parser defined there is rebuilt per pod.
argparse's objects for four sub-commands dirty about 1 MiB of pages the child shares
with the zygote; built once here, before the fork (`warm`), they stay shared.
"""

from __future__ import annotations

import argparse
import functools


@functools.cache
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


def warm() -> None:
    """For the zygote: build the parser and parse once, as every child will (the event
    loop is warmed by http_echo.warm)."""
    parser().parse_args(["http-echo", "--port", "1"])
