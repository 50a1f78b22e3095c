"""Which labs exist: every folder of this package that holds a topology.yaml.

A lab is added by adding its folder (`netlab/labs/<name_with_underscores>/`, with `LAB`
in its `__init__.py`); nothing else lists it. Folders are found without importing
them, so `netlab --help` never pays for a lab's imports.
"""

from __future__ import annotations

from importlib import import_module, resources

from netlab.errors import NetlabError
from netlab.labs.framework import Lab


def _folders() -> dict[str, str]:
    """lab name (`mirrord-ambient-steal`) → module (`netlab.labs.mirrord_ambient_steal`)."""
    out = {}
    for entry in resources.files(__package__).iterdir():
        if entry.is_dir() and entry.joinpath("topology.yaml").is_file():
            out[entry.name.replace("_", "-")] = f"{__package__}.{entry.name}"
    return out


def names() -> list[str]:
    return sorted(_folders())


def get(name: str) -> Lab:
    modules = _folders()
    if name not in modules:
        raise NetlabError(f"no lab named {name!r}; `netlab lab list` shows the labs "
                          f"({', '.join(sorted(modules))})")
    lab: Lab = import_module(modules[name]).LAB
    if lab.name != name:
        raise NetlabError(f"{modules[name]} holds lab {lab.name!r}, but its folder says "
                          f"{name!r}: name the folder after the lab")
    return lab
