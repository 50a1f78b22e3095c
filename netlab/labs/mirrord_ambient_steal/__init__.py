"""The mirrord-ambient-steal lab (mesh-facts §10c, mirrord#2456, fixed in 3.113.0).

mirrord's agent "steals" a pod's port with nat REDIRECT rules; Istio ambient's in-pod
rules sit in the same nat OUTPUT chain. The variants put both on the real kernel and
judge what the client gets and what the kernel shows.
"""

from __future__ import annotations

from pathlib import Path

from netlab import mesh
from netlab.labs import changes
from netlab.labs.framework import Lab, Outcome, Variant, expect
from netlab.labs.mirrord_ambient_steal import expectations as x
from netlab.labs.mirrord_ambient_steal.sections import sections
from netlab.labs.mirrord_ambient_steal.traffic import traffic, warm

STEAL_3112 = {"mode": "steal"}
STEAL_3113 = {"mode": "steal", "ambient_aware": True, "privileged": True}
STEAL_3113_UNPRIV = {"mode": "steal", "ambient_aware": True}
IN_MESH = {"client": "shop/client"}

_rules_gone = expect("rules-removed", "after SIGTERM the agent's MIRRORD chains are gone from "
                     "iptables-save", x.rules_removed_after, "iptables_after_agent")
_mtls = expect("still-mtls", f"the request crosses node-2's link as HBONE to :{mesh.HBONE_PORT}; "
               "its path is not readable on the wire", x.hbone_on_wire, "wire")
_stolen = expect("stolen", "the client gets the agent's answer", x.stolen, "client")
_not_stolen = expect("not-stolen", "the client does NOT get the agent's answer", x.not_stolen,
                     "client")
_redirected = expect("redirected", "conntrack shows the connection to :9080 answered by the "
                     "agent port", x.redirected_to_agent, "conntrack")
_jump_first = expect("jump-first", "MIRRORD_OUTPUT is rule 1 of nat OUTPUT", x.jump_first,
                     "iptables.nat_output")


def _broken_3112(istio: str) -> Variant:
    mode = "TPROXY" if istio == "1.23" else "REDIRECT"
    return Variant(
        f"mirrord-3.112-{istio.rstrip('+')}",
        f"mirrord 3.112 steal (OUTPUT jump appended) on Istio {istio} ambient ({mode})",
        Outcome("reproduced", "mirrord#2456: the steal silently does nothing, the real app "
                "answers"),
        (_not_stolen,
         expect("gets-app", "what it gets instead: the real app's answer", x.app_answered,
                "client"),
         expect("jump-after-istio", "nat OUTPUT runs ISTIO_OUTPUT before the appended "
                "MIRRORD_OUTPUT", x.jump_after_istio, "iptables.nat_output"),
         expect("no-redirect", "conntrack shows ztunnel's connection to :9080 un-redirected "
                "(ISTIO_OUTPUT's `! -d 127.0.0.1/32 -o lo -j ACCEPT` ended nat OUTPUT)",
                x.no_redirect_to_agent, "conntrack"),
         _mtls, _rules_gone),
        changes.istio(istio), {**IN_MESH, "agent": STEAL_3112})


VARIANTS = (
    Variant("baseline", "steal on a pod outside the mesh, out-of-mesh client",
            Outcome("works", "the agent steals the request"),
            (_stolen, _redirected, _rules_gone),
            changes.label_namespace("shop", {mesh.DATAPLANE_MODE_LABEL: None}),
            {"client": "outside/client", "agent": STEAL_3112}),
    _broken_3112("1.23"),
    _broken_3112("1.24+"),
    Variant("fix-3.113", "mirrord 3.113: OUTPUT jump at position 1 + route_localnet=1 (privileged)",
            Outcome("fixed", "the agent steals, and the request is still mTLS up to the pod"),
            (_stolen, _jump_first,
             expect("redirect-loopback", "conntrack shows ztunnel's connection REDIRECTed to "
                    "127.0.0.1:agent-port", x.redirected_to_loopback, "conntrack"),
             expect("route-localnet", "net.ipv4.conf.all.route_localnet reads back 1",
                    x.route_localnet("1"), "sysctl"),
             _mtls, _rules_gone),
            params={**IN_MESH, "agent": STEAL_3113}),
    Variant("fix-unprivileged", "the 3.113 fix without privileges: a warning, and a hang",
            Outcome("broken", "the SYN dies at the agent's listener; the client hangs"),
            (_not_stolen,
             expect("timeout", "what it gets instead: nothing (curl times out, exit 28)",
                    x.client_timed_out, "client"),
             _jump_first,
             expect("redirect-loopback", "conntrack shows the SYN REDIRECTed to "
                    "127.0.0.1:agent-port with the client's IP as source",
                    x.redirected_to_loopback, "conntrack"),
             expect("syn-dies", "the redirected SYN arrives on lo but is never answered; the "
                    "kernel records the drop", x.syn_dies_at_agent, "events", "drops",
                    "counters"),
             expect("route-localnet", "route_localnet reads back 0", x.route_localnet("0"),
                    "sysctl"),
             expect("warning", "the agent warns that route_localnet could not be set",
                    x.agent_warned, "agent.warnings")),
            params={**IN_MESH, "agent": STEAL_3113_UNPRIV}),
    Variant("workaround-unlabel", "pod opted out (istio.io/dataplane-mode: none), mirrord 3.112",
            Outcome("works", "the agent steals, but the pod's traffic is no longer mTLS"),
            (_stolen, _redirected,
             expect("plaintext", "no HBONE to the target: the request path is readable on "
                    "node-2's link", x.plaintext_on_wire, "wire")),
            changes.label_pods("shop", "target", {mesh.DATAPLANE_MODE_LABEL: "none"}),
            {**IN_MESH, "agent": STEAL_3112}),
    Variant("workaround-mirror", "mirror mode (sniff, no redirect)",
            Outcome("works", "the app answers and the agent gets a copy of the request"),
            (expect("gets-app", "the client gets the real app's answer", x.app_answered,
                    "client"),
             expect("copy", "the agent's log holds a copy of the request (same path)",
                    x.mirror_copy, "agent.mirrored"),
             expect("no-rules", "no MIRRORD chains in the pod's nat table", x.no_mirrord_rules,
                    "iptables"),
             _mtls),
            params={**IN_MESH, "agent": {"mode": "mirror"}}),
)

LAB = Lab(name="mirrord-ambient-steal",
          title="mirrord steal vs Istio ambient (mirrord#2456, fixed in 3.113.0)",
          folder=Path(__file__).parent, variants=VARIANTS, traffic=traffic,
          sections=sections, warm=warm)
