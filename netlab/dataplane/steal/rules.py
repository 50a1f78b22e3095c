"""Installing and removing the agent's nat chains, and the route_localnet sysctl.

The agent runs inside the pod's netns, so plain `iptables-restore`/`iptables` act on
that netns. Removal deletes exactly the jumps and chains the agent added, never a
flush of the table: Istio's rules sit in the same table and must survive the agent.
"""

from __future__ import annotations

import subprocess

from netlab.plan.steal_rules import INPUT_CHAIN, OUTPUT_CHAIN, RESTORE_ARGS, MeshKind, detect_mesh

ROUTE_LOCALNET = "/proc/sys/net/ipv4/conf/all/route_localnet"
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096


def iptables_save(table: str | None = None) -> str:
    argv = ["iptables-save"] + (["-t", table] if table else [])
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def mesh() -> MeshKind:
    return detect_mesh(iptables_save())


def install(text: str) -> None:
    res = subprocess.run(["iptables-restore", *RESTORE_ARGS], input=text, capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"iptables-restore failed: {res.stderr.strip()}")


def remove() -> list[str]:
    """Undo install(); returns the commands that failed (normally none)."""
    failed = []
    for args in (["-D", "PREROUTING", "-j", INPUT_CHAIN], ["-D", "OUTPUT", "-j", OUTPUT_CHAIN],
                 ["-F", INPUT_CHAIN], ["-F", OUTPUT_CHAIN], ["-X", INPUT_CHAIN],
                 ["-X", OUTPUT_CHAIN]):
        if subprocess.run(["iptables", "-w", "-t", "nat", *args], capture_output=True).returncode:
            failed.append(" ".join(args))
    return failed


def read_route_localnet() -> str:
    with open(ROUTE_LOCALNET) as f:
        return f.read().strip()


def write_route_localnet(value: str) -> None:
    with open(ROUTE_LOCALNET, "w") as f:
        f.write(value)


def drop_sysctl_privilege() -> None:
    """Make /proc/sys read-only in this process' mount namespace, as a container runtime does
    for an unprivileged container: the sysctl write then fails for the real reason (EROFS).

    The agent is spawned with a private mount namespace, so this never affects the host.
    """
    from netlab.kernel import netns as nsmod
    nsmod.mount("/proc/sys", "/proc/sys", None, MS_BIND)
    nsmod.mount("/proc/sys", "/proc/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
