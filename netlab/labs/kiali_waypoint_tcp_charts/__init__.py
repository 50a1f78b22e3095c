"""The kiali-waypoint-tcp-charts lab (kiali#7774, fixed by kiali#7784 in Kiali 2.0).

A waypoint sits in front of a TCP Service. Kiali's edge panel charts the waypoint →
ratings-v1 edge from the destination's inbound metrics; before kiali#7784 it asked
`reporter="source"`, which nobody reports for that leg. Both variants read ONE run of
the lab (`shares_instance`): Kiali 1.89 and Kiali 2.0 ask the same real Prometheus.
"""

from __future__ import annotations

from pathlib import Path

from netlab.labs.framework import Lab, Outcome, Variant, expect
from netlab.labs.kiali_waypoint_tcp_charts import expectations as x
from netlab.labs.kiali_waypoint_tcp_charts.sections import sections
from netlab.labs.kiali_waypoint_tcp_charts.traffic import FROM_WAYPOINT, TO_WAYPOINT, traffic

ONE_RUN = "one-prometheus"
FROM, TO = FROM_WAYPOINT[0], TO_WAYPOINT[0]

_leg = expect("leg-reported", "Prometheus holds the waypoint → ratings-v1 bytes as the destination ztunnel's "
              "series only (reporter=\"destination\", source_workload=\"waypoint\"), and every client got "
              "its bytes echoed", x.leg_reported_by_destination, "series", "clients")
_graph_edges = expect("graph-edges", "Kiali 2.0's graph draws sleep → waypoint (\"to\") and waypoint → "
                      "ratings-v1 (\"from\"), the edges the panels are opened on",
                      lambda ev: _both(x.graph_edge("2.0", "bookinfo/sleep", "bookinfo/waypoint", "to")(ev),
                                       x.graph_edge("2.0", "bookinfo/waypoint", "bookinfo/ratings-v1", "from")(ev)),
                      "kiali.edges")


def _both(a: tuple[bool, str], b: tuple[bool, str]) -> tuple[bool, str]:
    return a[0] and b[0], f"{a[1]}; {b[1]}"


def _to_waypoint(version: str):  # type: ignore[no-untyped-def]
    return expect("to-waypoint-charted", f"Kiali {version}'s sleep → waypoint charts (reporter=\"source\", "
                  "the client ztunnel's series) have datapoints above 0",
                  lambda ev: _both(x.asks(version, TO, "source", "waypoint")(ev),
                                   x.charted(version, TO, "sleep")(ev)), "kiali.panels")


VARIANTS = (
    Variant("kiali-1.89", "Kiali's edge panel before kiali#7784 (its v1.89.0 code) on the waypoint → "
            "ratings-v1 TCP edge",
            Outcome("reproduced", "Kiali 1.89's waypoint→ratings TCP charts are empty: "
                    "\"Not enough traffic to generate chart\""),
            (expect("asks-source", "the panel asks ratings-v1's inbound TCP metrics with reporter=\"source\"",
                    x.asks("1.89", FROM, "source", "ratings-v1"), "kiali.panels"),
             expect("charts-empty", "Prometheus answers both queries (tcp_sent, tcp_received) with nothing: "
                    "Kiali's null, \"Not enough traffic to generate chart\"",
                    x.empty("1.89", FROM), "kiali.panels"),
             _leg, _graph_edges, _to_waypoint("1.89")),
            shares_instance=ONE_RUN),
    Variant("kiali-2.0", "Kiali 2.0's edge panel (kiali#7784) on the same edge of the same run",
            Outcome("fixed", "Kiali 2.0 charts the destination ztunnel's series"),
            (expect("asks-destination", "for an edge from a waypoint the panel asks reporter=\"destination\"",
                    x.asks("2.0", FROM, "destination", "ratings-v1"), "kiali.panels"),
             expect("charted", "both charts have datapoints from source_workload=\"waypoint\", with a rate "
                    "above 0", x.charted("2.0", FROM, "waypoint"), "kiali.panels"),
             _leg, _graph_edges, _to_waypoint("2.0")),
            shares_instance=ONE_RUN),
)

LAB = Lab(name="kiali-waypoint-tcp-charts",
          title="Kiali's TCP charts of a waypoint edge are empty (kiali#7774, fixed by kiali#7784 in 2.0)",
          folder=Path(__file__).parent, variants=VARIANTS, traffic=traffic, sections=sections)
