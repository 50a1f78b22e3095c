"""mirrord's "steal" redirect, added on top of Istio's rules in a pod netns (mesh-facts §10c).

The steal agent adds its own nat chains beside Istio's; it must never flush them, so the
text here is for `iptables-restore --noflush` (`RESTORE_ARGS`). Where the OUTPUT jump
lands is the whole story of mirrord#2456: ambient's nat ISTIO_OUTPUT ends traversal with
`! -d 127.0.0.1/32 -o lo -j ACCEPT` for ztunnel's delivery to the app, so an *appended*
MIRRORD_OUTPUT jump never runs for that traffic; the fix (mirrord#2627) inserts it at
position 1. `output_jump_first` selects between the broken and the fixed agent.
"""

from __future__ import annotations

from typing import Literal

from netlab.plan import iptables_text

INPUT_CHAIN = "MIRRORD_INPUT"
OUTPUT_CHAIN = "MIRRORD_OUTPUT"
RESTORE_ARGS = ("--noflush",)

MeshKind = Literal["none", "istio-sidecar", "istio-ambient"]


def render_steal(port: int, agent_port: int, agent_gid: int, *, output_jump_first: bool) -> str:
    """nat rules redirecting TCP `port` to the agent's `agent_port`, for `--noflush` restore.

    `:CHAIN - [0:0]` rather than `-N`: with --noflush it creates the chain, or empties
    it if a previous agent left one, instead of failing. The jumps themselves are not
    idempotent; applying twice adds a second jump, as running the agent twice would.
    The agent's own gid RETURNs first so its connection to the real app is not stolen.
    """
    for name, value in (("port", port), ("agent_port", agent_port)):
        if not 0 < value < 65536:
            raise ValueError(f"{name} {value} is not a TCP port")
    redirect = f"-p tcp -m tcp --dport {port} -j REDIRECT --to-ports {agent_port}"
    out_jump = f"-I OUTPUT 1 -j {OUTPUT_CHAIN}" if output_jump_first else f"-A OUTPUT -j {OUTPUT_CHAIN}"
    lines = [
        "*nat",
        f":{INPUT_CHAIN} - [0:0]",
        f":{OUTPUT_CHAIN} - [0:0]",
        f"-A PREROUTING -j {INPUT_CHAIN}",
        f"-A {INPUT_CHAIN} {redirect}",
        out_jump,
        f"-A {OUTPUT_CHAIN} -m owner --gid-owner {agent_gid} -j RETURN",
        f"-A {OUTPUT_CHAIN} -o lo {redirect}",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def detect_mesh(iptables_save_text: str) -> MeshKind:
    """Guess the mesh the way mirrord's agent does, from the pod's iptables-save output.

    A nat OUTPUT jump to ISTIO_OUTPUT means Istio; an ISTIO_OUTPUT chain in mangle as well
    means ambient. On Istio's goldens this holds for every variant: ambient 1.23 (TPROXY)
    and 1.24+ (REDIRECT, which still keeps mangle ISTIO_OUTPUT for the connmark restore),
    including bypass-inbound; sidecar REDIRECT has no mangle chains and sidecar TPROXY
    has mangle ISTIO_INBOUND/ISTIO_DIVERT/ISTIO_TPROXY but no ISTIO_OUTPUT.
    """
    rules = iptables_text.parse(iptables_save_text) if iptables_save_text.strip() else \
        iptables_text.Ruleset()
    nat_output = rules.chain("nat", "OUTPUT")
    if not any(r.split() == ["-j", "ISTIO_OUTPUT"] or r.endswith(" -j ISTIO_OUTPUT")
               for r in nat_output):
        return "none"
    if "ISTIO_OUTPUT" in rules.tables.get("mangle", {}):
        return "istio-ambient"
    return "istio-sidecar"
