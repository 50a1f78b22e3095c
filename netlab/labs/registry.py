"""Which labs exist. Imported lazily so `netlab --help` never pays for a lab's imports."""

from __future__ import annotations

from importlib import import_module

from netlab.errors import NetlabError
from netlab.labs.framework import Lab

_MODULES = {"mirrord-ambient-steal": "netlab.labs.mirrord_ambient_steal"}


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Lab:
    if name not in _MODULES:
        raise NetlabError(f"no lab named {name!r}; `netlab lab list` shows the labs "
                          f"({', '.join(names())})")
    lab: Lab = import_module(_MODULES[name]).LAB
    return lab
