"""What an Istio version changes in the dataplane, decoded once from the Lab header.

Why a profile: the version string used to be compared in the rule renderers, the
planner and ztunnel, each re-deciding what "1.23" means. Now the planner reads the
profile's fields and hands them on (to the renderers as arguments, to the proxies in
their config snapshot); nobody else reads the version string. A new version is a new
entry in `PROFILES`.

The install profile ("ambient" or "default") is decoded here too, into the flags istiod
and injection read (docs/sidecar.md).

Sources: istio/istio PR #52622 (REDIRECT replaced TPROXY in 1.24; TPROXY removed in
1.25) and the ambient-inpod golden files of 1.23 and 1.28 (mesh-facts §1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from netlab.model import IstioInstallProfile
from netlab.snapshot import Capture


@dataclass(frozen=True)
class IstioProfile:
    version: str  # for people (logs, reports); code decides on the fields below
    ambient_capture: Capture  # how istio-cni sends a pod's traffic to ztunnel
    bypass_inbound_supported: bool  # ambient.istio.io/bypass-inbound-capture has verified rules
    hostprobe_jump_first: bool  # the node's POSTROUTING jump is inserted at 1 (else appended)
    dns_tcp_capture: bool  # TCP :53 is redirected to the DNS proxy, not only UDP
    dns_capture_exempts_proxy_mark: bool  # the DNS redirect skips 0x539, so the proxy may
    #                                       forward DNS from inside the pod
    # What the install profile (spec.istio.profile) switches; set by `profile()`.
    install: IstioInstallProfile = "ambient"
    ambient: bool = True  # PILOT_ENABLE_AMBIENT: ztunnel runs, ambient pods exist
    send_hbone: bool = True  # PILOT_ENABLE_SENDING_HBONE (true with ambient): sidecars may
    #                          tunnel to HBONE-only endpoints
    prefer_hbone: bool = False  # PILOT_PREFER_SENDING_HBONE: false, so sidecar→sidecar stays mTLS
    sidecar_hbone: bool = True  # ISTIO_META_ENABLE_HBONE + PILOT_ENABLE_SIDECAR_LISTENING_HBONE:
    #                             injection adds networking.istio.io/tunnel: http, 15008 listens
    sidecar_metadata_discovery: bool = False  # PEER_METADATA_DISCOVERY: off for sidecars
    #                                           through 1.24 (on by default from 1.25, §A4)
    waypoints: bool = True  # netlab models the waypoint path of this version (plan/modes/waypoint.py)

    @property
    def listener_transparent(self) -> bool:
        """TPROXY delivers to a listener only with IP_TRANSPARENT set."""
        return self.ambient_capture == "tproxy"


PROFILES: dict[str, IstioProfile] = {
    "1.23": IstioProfile(version="1.23", ambient_capture="tproxy", bypass_inbound_supported=False,
                         hostprobe_jump_first=False, dns_tcp_capture=False,
                         dns_capture_exempts_proxy_mark=False, waypoints=False),
    "1.24+": IstioProfile(version="1.24+", ambient_capture="redirect", bypass_inbound_supported=True,
                          hostprobe_jump_first=True, dns_tcp_capture=True,
                          dns_capture_exempts_proxy_mark=True),
}


def profile(version: str, install: IstioInstallProfile = "ambient") -> IstioProfile:
    """The profile of a Lab's `istio_version` and install profile (`istio_profile`).

    The topology parser has already checked both. The ambient install profile sets
    PILOT_ENABLE_AMBIENT and ISTIO_META_ENABLE_HBONE (istio `manifests/helm-profiles/
    ambient.yaml`); the flags that depend on them default to on only with ambient
    (`pilot/pkg/features/ambient.go` registerAmbient), so "default" turns all of them off.
    """
    try:
        base = PROFILES[version]
    except KeyError:
        raise ValueError(f"unknown Istio version {version!r}; known: {', '.join(PROFILES)}") from None
    if install not in ("ambient", "default"):
        raise ValueError(f"unknown Istio install profile {install!r}; known: ambient, default")
    ambient = install == "ambient"
    return dataclasses.replace(base, install=install, ambient=ambient, send_hbone=ambient,
                               sidecar_hbone=ambient)
