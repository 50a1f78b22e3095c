"""The mirrord-ambient-steal lab (mesh-facts §10c, mirrord#2456, fixed in 3.113.0).

mirrord's agent "steals" a pod's port with nat REDIRECT rules; Istio ambient's in-pod
rules sit in the same nat OUTPUT chain. The variants put both on the real kernel and
judge what the client gets and what the kernel shows.
"""

from __future__ import annotations

from pathlib import Path

from netlab.labs.framework import Lab, Variant
from netlab.labs.mirrord_ambient_steal import expectations as x
from netlab.labs.mirrord_ambient_steal.expectations import E
from netlab.labs.mirrord_ambient_steal.scenario import run

STEAL_3112 = {"mode": "steal"}
STEAL_3113 = {"mode": "steal", "ambient_aware": True, "privileged": True}
STEAL_3113_UNPRIV = {"mode": "steal", "ambient_aware": True}
MESH = {"ambient": True, "client": "shop/client"}

_rules_gone = E("rules-removed", "after SIGTERM the agent's MIRRORD chains are gone from "
                "iptables-save", x.rules_removed_after, "iptables_after_agent")
_mtls = E("still-mtls", "the request crosses node-2's link as HBONE to :15008; its path is "
          "not readable on the wire", x.hbone_on_wire, "wire")


def _broken_3112(istio: str) -> Variant:
    mode = "TPROXY" if istio == "1.23" else "REDIRECT"
    return Variant(
        f"mirrord-3.112-{istio.rstrip('+')}",
        f"mirrord 3.112 steal (OUTPUT jump appended) on Istio {istio} ambient ({mode}): broken",
        (E("not-stolen", "the client does NOT get the agent's answer", x.not_stolen, "client"),
         E("gets-app", "what it gets instead: the real app's answer", x.app_answered, "client"),
         E("jump-after-istio", "nat OUTPUT runs ISTIO_OUTPUT before the appended MIRRORD_OUTPUT",
           x.jump_after_istio, "iptables.nat_output"),
         E("no-redirect", "conntrack shows ztunnel's connection to :9080 un-redirected (ISTIO_OUTPUT's "
           "`! -d 127.0.0.1/32 -o lo -j ACCEPT` ended nat OUTPUT)", x.no_redirect_to_agent,
           "conntrack"),
         _mtls, _rules_gone),
        {**MESH, "istio": istio, "agent": STEAL_3112}, works=False)


VARIANTS = (
    Variant("baseline", "steal on a pod outside the mesh, out-of-mesh client: works",
            (E("stolen", "the client gets the agent's answer", x.stolen, "client"),
             E("redirected", "conntrack shows the connection to :9080 answered by the agent port",
               x.redirected_to_agent, "conntrack"),
             _rules_gone),
            {"ambient": False, "client": "outside/client", "istio": "1.24+", "agent": STEAL_3112}),
    _broken_3112("1.23"),
    _broken_3112("1.24+"),
    Variant("fix-3.113", "mirrord 3.113: OUTPUT jump at position 1 + route_localnet=1 (privileged)",
            (E("stolen", "the client gets the agent's answer", x.stolen, "client"),
             E("jump-first", "MIRRORD_OUTPUT is rule 1 of nat OUTPUT", x.jump_first,
               "iptables.nat_output"),
             E("redirect-loopback", "conntrack shows ztunnel's connection REDIRECTed to "
               "127.0.0.1:agent-port", x.redirected_to_loopback, "conntrack"),
             E("route-localnet", "net.ipv4.conf.all.route_localnet reads back 1",
               x.route_localnet("1"), "sysctl"),
             _mtls, _rules_gone),
            {**MESH, "istio": "1.24+", "agent": STEAL_3113}),
    Variant("fix-unprivileged", "the 3.113 fix without privileges: still broken, with a warning",
            (E("not-stolen", "the client does NOT get the agent's answer", x.not_stolen, "client"),
             E("timeout", "what it gets instead: nothing (curl times out, exit 28)",
               x.client_timed_out, "client"),
             E("jump-first", "MIRRORD_OUTPUT is rule 1 of nat OUTPUT", x.jump_first,
               "iptables.nat_output"),
             E("redirect-loopback", "conntrack shows the SYN REDIRECTed to 127.0.0.1:agent-port "
               "with the client's IP as source", x.redirected_to_loopback, "conntrack"),
             E("syn-dies", "the redirected SYN arrives on lo but is never answered; the kernel "
               "records the drop", x.syn_dies_at_agent, "events", "drops", "counters"),
             E("route-localnet", "route_localnet reads back 0", x.route_localnet("0"), "sysctl"),
             E("warning", "the agent warns that route_localnet could not be set",
               x.agent_warned, "agent.warnings")),
            {**MESH, "istio": "1.24+", "agent": STEAL_3113_UNPRIV}, works=False),
    Variant("workaround-unlabel", "pod opted out (istio.io/dataplane-mode: none), mirrord 3.112: "
            "steal works, but the traffic is no longer mTLS",
            (E("stolen", "the client gets the agent's answer", x.stolen, "client"),
             E("redirected", "conntrack shows the connection to :9080 answered by the agent port",
               x.redirected_to_agent, "conntrack"),
             E("plaintext", "no HBONE to the target: the request path is readable on node-2's link",
               x.plaintext_on_wire, "wire")),
            {**MESH, "istio": "1.24+", "agent": STEAL_3112,
             "target_labels": {"istio.io/dataplane-mode": "none"}}),
    Variant("workaround-mirror", "mirror mode (sniff, no redirect): the app answers, the agent "
            "gets a copy",
            (E("gets-app", "the client gets the real app's answer", x.app_answered, "client"),
             E("copy", "the agent's log holds a copy of the request (same path)", x.mirror_copy,
               "agent.mirrored"),
             E("no-rules", "no MIRRORD chains in the pod's nat table", x.no_mirrord_rules,
               "iptables"),
             _mtls),
            {**MESH, "istio": "1.24+", "agent": {"mode": "mirror"}}),
)

LAB = Lab(name="mirrord-ambient-steal",
          title="mirrord steal vs Istio ambient (mirrord#2456, fixed in 3.113.0)",
          explain_path=Path(__file__).with_name("explain.md"),
          variants=VARIANTS, scenario=run)
