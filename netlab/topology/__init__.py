"""The topology layer: Kubernetes-shaped YAML files → a validated `netlab.model.Lab`.

Pure: it reads files and builds data, nothing else, so it needs no root and an error
never leaves anything half-built. See docs/topology.md for the format.
"""

from netlab.topology.header import schema_path
from netlab.topology.loader import SUPPORTED_KINDS, load
from netlab.topology.placement import eligible_nodes

__all__ = ["load", "schema_path", "eligible_nodes", "SUPPORTED_KINDS"]
