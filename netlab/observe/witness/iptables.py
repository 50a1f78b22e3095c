"""iptables-save read back from a netns, and the pieces of it a report needs.

Rules are judged as the kernel holds them (iptables-save), not as whoever installed
them meant them, so an agent's rules that failed to apply, or a chain that runs too
late, show up as what they are.
"""

from __future__ import annotations

from netlab.kernel.apply import run_netns_only


def save(netns: str, table: str | None = None) -> str:
    """`iptables-save [-t table]` in `netns`, without its comment lines (timestamps)."""
    argv = ["iptables-save"] + (["-t", table] if table else [])
    res = run_netns_only(netns, argv)
    return "\n".join(line for line in res.stdout.splitlines() if not line.startswith("#"))


def table(save_text: str, name: str) -> list[str]:
    """The lines of one table (`*nat` … `COMMIT`); empty when the table is not there."""
    lines = save_text.splitlines()
    try:
        body = lines[lines.index(f"*{name}"):]
        return body[:body.index("COMMIT") + 1]
    except ValueError:
        return []


def chain(rules: list[str], name: str) -> list[str]:
    """The `-A NAME …` rules of one chain, in the order the kernel walks them."""
    return [r for r in rules if r.startswith(f"-A {name} ")]


def target(rule: str) -> str:
    """The jump target of a rule (`-j ISTIO_OUTPUT` → ISTIO_OUTPUT); "" for none."""
    return rule.split(" -j ")[-1].split()[0] if " -j " in rule else ""


def positions(rules: list[str]) -> dict[str, int]:
    """Where each jump target first appears in a chain, 1-based (the rule number)."""
    out: dict[str, int] = {}
    for i, rule in enumerate(rules, 1):
        out.setdefault(target(rule), i)
    return out


def excerpt(rules: list[str], chain_prefixes: tuple[str, ...]) -> list[str]:
    """The rules of the chains whose names start with one of `chain_prefixes`."""
    return [r for r in rules if r.startswith(tuple(f"-A {p}" for p in chain_prefixes))]
