"""tiny-echo: a two-variant lab written only with the framework's public API.

It is the example of how a lab is put together (see docs/labs.md) and the subject of
the framework's end-to-end kernel test: one variant that works, one that is broken by
a change to the model, judged on the client's result and the server's SNMP counters.
"""

from __future__ import annotations

from pathlib import Path

from netlab.labs import changes
from netlab.labs.context import Context
from netlab.labs.framework import Evidence, Lab, Outcome, Variant, dig, expect
from netlab.observe.witness import snmp

URL = "http://echo.demo/tiny"


def traffic(ctx: Context) -> Evidence:
    client, echo = ctx.pod("demo/client"), ctx.pod("demo/echo")
    ctx.progress("curl from demo/client")
    before = snmp.counters(echo["netns"])
    res = ctx.exec(client, ["curl", "-sS", "-m", "3", URL], timeout=10)
    return {"server": echo["name"],
            "client": {"exit_code": res.returncode, "stdout": res.stdout,
                       "stderr": res.stderr.strip()},
            "counters": snmp.delta(before, snmp.counters(echo["netns"]),
                                   ["TcpOutRsts", "TcpPassiveOpens"])}


def _client(ev: Evidence) -> str:
    return (f"curl exit {dig(ev, 'client.exit_code')}, body {dig(ev, 'client.stdout')!r}, "
            f"stderr {dig(ev, 'client.stderr')!r}")


def echoed(ev: Evidence) -> tuple[bool, str]:
    return (dig(ev, "client.exit_code") == 0
            and f'"server": "{ev["server"]}"' in dig(ev, "client.stdout", "")), _client(ev)


def refused(ev: Evidence) -> tuple[bool, str]:
    return dig(ev, "client.exit_code") == 7, _client(ev)


def reset_by_kernel(ev: Evidence) -> tuple[bool, str]:
    rsts = dig(ev, "counters.TcpOutRsts", 0)
    return rsts > 0, f"TcpOutRsts +{rsts} in the echo pod"


LAB = Lab(
    name="tiny-echo", title="tiny-echo: a Service that points at the wrong port",
    folder=Path(__file__).parent, traffic=traffic,
    variants=(
        Variant("works", "the Service points at the echo's port",
                Outcome("works", "the client gets the echo"),
                (expect("echoed", "curl gets the echo's answer", echoed, "client"),)),
        Variant("broken", "the Service's targetPort is 8081, where nothing listens",
                Outcome("broken", "connection refused"),
                (expect("refused", "curl exits 7 (connection refused)", refused, "client"),
                 expect("rst", "the echo pod's kernel sent the RST", reset_by_kernel,
                        "counters")),
                changes.service_target_port("demo", "echo", 80, 8081)),
    ))
