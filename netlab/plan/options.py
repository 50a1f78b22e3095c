"""How to plan, as opposed to what: the interpreter for netlab's processes, and whether to start any.

Its own module so that the planner and the mesh modes both import it and neither imports
the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanOptions:
    python: str = "python3"  # interpreter for netlab's own processes (the venv's)
    start_processes: bool = True
