"""A snapshot of the host's initial network namespace, to prove labs leave it alone."""

from __future__ import annotations

import re
import subprocess

SYSCTLS = ["net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/all/route_localnet",
           "net/ipv4/conf/default/rp_filter", "net/bridge/bridge-nf-call-iptables"]


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def snapshot() -> dict[str, object]:
    links = re.sub(r"^\s+(RX|TX).*\n.*\n", "", _run("ip", "-o", "link"), flags=re.M)
    links = "\n".join(sorted(re.sub(r"\s+link/\S+ \S+ brd \S+", "", line).split(" qlen")[0].split("altname")[0]
                             for line in links.splitlines()))
    sysctls = {}
    for key in SYSCTLS:
        try:
            with open(f"/proc/sys/{key}") as f:
                sysctls[key] = f.read().strip()
        except FileNotFoundError:
            sysctls[key] = None
    strip = lambda s: "\n".join(l for l in s.splitlines() if not l.startswith("#"))  # noqa: E731
    return {
        "links": links,
        "addrs": _run("ip", "-o", "addr"),
        "routes": _run("ip", "route", "show", "table", "all"),
        "rules": _run("ip", "rule"),
        "iptables": re.sub(r"\[\d+:\d+\]", "", strip(_run("iptables-save"))),
        "nft": _run("nft", "list", "ruleset"),
        "sysctls": sysctls,
    }
