"""`python -m netlab.dataplane.waypoint --config FILE`: one waypoint, in its pod's netns."""

from __future__ import annotations

from netlab.dataplane.proxy import config, lifecycle
from netlab.dataplane.waypoint.proxy import Waypoint
from netlab.snapshot import ProxySnapshot

# What netlab's process zygote (kernel/zygote.py) runs once before it forks this proxy:
# `config.warm()`, the snapshot decoders worked out for every proxy it forks.
PRELOAD = ("netlab.dataplane.proxy.config",)


async def run(cfg: ProxySnapshot) -> None:
    """Ready (on the ready pipe) once 15008, 15021, 15020 and 15090 listen."""
    async def start() -> Waypoint:
        return await Waypoint(cfg).start()

    await lifecycle.serve(start, on_ready=Waypoint.announce)


def main(argv: list[str] | None = None) -> None:
    config.main("waypoint", run, argv)


if __name__ == "__main__":
    main()
