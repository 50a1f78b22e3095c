"""Reading the kernel's own account of a pod netns: iptables-save, sysctls, SNMP counters.

These are the lab's witnesses. Each reads state back from the kernel rather than
trusting what the agent says it did.
"""

from __future__ import annotations

from netlab.kernel import netns as nsmod
from netlab.kernel.apply import run_netns_only

COUNTERS = ("TcpExtListenDrops", "IpOutNoRoutes", "TcpExtTCPSynRetrans", "IpInReceives",
            "TcpActiveOpens", "TcpPassiveOpens")


def iptables_save(netns: str, table: str | None = None) -> str:
    argv = ["iptables-save"] + (["-t", table] if table else [])
    res = run_netns_only(netns, argv)
    return "\n".join(line for line in res.stdout.splitlines() if not line.startswith("#"))


def sysctl(netns: str, key: str) -> str:
    with nsmod.entered(netns):
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()


def snmp(netns: str) -> dict[str, int]:
    """/proc/net/{snmp,netstat} of the netns, as "TcpExtListenDrops"-style names."""
    out: dict[str, int] = {}
    with nsmod.entered(netns):
        texts = []
        for path in ("/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"):
            with open(path) as f:
                texts.append(f.read().splitlines())
    for lines in texts:
        for head, vals in zip(lines[::2], lines[1::2]):
            prefix = head.split(":")[0]
            for k, v in zip(head.split()[1:], vals.split()[1:]):
                try:
                    out[prefix + k] = int(v)
                except ValueError:
                    pass
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in COUNTERS}


def nat_excerpt(save_text: str) -> dict[str, object]:
    """The nat rules that decide the story, and where each OUTPUT jump sits (1-based)."""
    lines = save_text.splitlines()
    try:
        nat = lines[lines.index("*nat"):]
        nat = nat[:nat.index("COMMIT") + 1]
    except ValueError:
        nat = []
    output = [r for r in nat if r.startswith("-A OUTPUT ")]
    positions = {}
    for i, rule in enumerate(output, 1):
        target = rule.split("-j ")[-1].split()[0]
        positions.setdefault(target, i)
    keep = [r for r in nat if r.startswith(("-A OUTPUT", "-A PREROUTING", "-A ISTIO_OUTPUT",
                                            "-A MIRRORD_"))]
    return {"nat_output": output, "output_positions": positions, "excerpt": keep,
            "mirrord_rules": sum("MIRRORD" in r for r in nat)}
