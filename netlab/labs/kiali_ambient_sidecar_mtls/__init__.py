"""The kiali-ambient-sidecar-mtls lab (kiali#7811, fixed by kiali#7879 in Kiali 2.1).

An ambient client calls a sidecar server over HBONE: mTLS on the wire and in ztunnel's
log, yet Kiali 2.0 draws the edge without the lock. Both variants read ONE run of the
lab (`shares_instance`): Kiali 2.0 and Kiali 2.1 ask the same real Prometheus.
"""

from __future__ import annotations

from pathlib import Path

from netlab.labs.framework import Lab, Outcome, Variant, expect
from netlab.labs.kiali_ambient_sidecar_mtls import expectations as x
from netlab.labs.kiali_ambient_sidecar_mtls.sections import sections
from netlab.labs.kiali_ambient_sidecar_mtls.traffic import traffic

ONE_RUN = "one-prometheus"

_shared = (
    expect("clients", "every request of the four pairs gets 200", x.clients_answered, "clients"),
    expect("ztunnel-mtls", "ztunnel logs ns-a/sleep → ratings as mTLS: HBONE to ratings' :15008, with "
           "sleep's and ratings' SPIFFE identities", x.ztunnel_logged_mtls, "ztunnel_log"),
    expect("only-tls-on-wire", "on the server node's link the request is only TLS to :15008 (a handshake, "
           "then TLS records; the request path never in clear)", x.only_tls_on_wire, "wire"),
    expect("series", "the sidecar's destination series has an unknown source (mutual_tls, sleep's "
           "principal); ztunnel's source series is mutual_tls from sleep to ratings-v1", x.series_explain,
           "series"),
)


def _controls(version: str):  # type: ignore[no-untyped-def]
    return expect("controls-locked", f"Kiali {version} locks ambient→ambient, sidecar→ambient and "
                  "sidecar→sidecar", x.controls_locked(version), "kiali.edges")


VARIANTS = (
    Variant("kiali-2.0", "Kiali 2.0's graph of ns-a and ns-b, Display → Security on",
            Outcome("reproduced", "kiali#7811: Kiali 2.0 draws ambient sleep → sidecar ratings without the "
                    "mTLS lock"),
            (expect("no-lock", "the edge ns-a/sleep → ratings carries traffic but no isMTLS: no lock",
                    x.locked("2.0", "ambient->sidecar", False), "kiali.edges"),
             expect("destination-only", "its securityPolicy appender asks only destination-reported series",
                    x.security_queries("2.0", False), "kiali.security_queries"),
             _controls("2.0"), *_shared),
            shares_instance=ONE_RUN),
    Variant("kiali-2.1", "Kiali 2.1's graph of the same run (kiali#7879)",
            Outcome("fixed", "Kiali 2.1 locks the edge from ztunnel's reporter=\"source\" mutual_tls series"),
            (expect("lock", "the edge ns-a/sleep → ratings has isMTLS 100 and the lock",
                    x.locked("2.1", "ambient->sidecar", True), "kiali.edges"),
             expect("ztunnel-source", "its securityPolicy appender also asks app=\"ztunnel\",reporter=\"source\" "
                    "for ns-a and gets series", x.security_queries("2.1", True), "kiali.security_queries"),
             _controls("2.1"), *_shared),
            shares_instance=ONE_RUN),
)

LAB = Lab(name="kiali-ambient-sidecar-mtls",
          title="Kiali draws an ambient → sidecar edge without the mTLS lock (kiali#7811, fixed in 2.1)",
          folder=Path(__file__).parent, variants=VARIANTS, traffic=traffic, sections=sections)
