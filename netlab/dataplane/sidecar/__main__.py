"""`python -m netlab.dataplane.sidecar --config FILE`: the sidecar of one injected pod."""

from __future__ import annotations

from netlab.dataplane.proxy import config, lifecycle
from netlab.dataplane.sidecar.proxy import Sidecar
from netlab.xds import SidecarSnapshot

# What netlab's process zygote (kernel/zygote.py) runs once before it forks this proxy:
# `config.warm()`, the snapshot decoders worked out for every proxy it forks.
PRELOAD = ("netlab.dataplane.proxy.config",)


async def run(snap: SidecarSnapshot) -> None:
    """Ready (on the ready pipe) once the certificate, listeners and admin ports are up."""
    async def start() -> Sidecar:
        return await Sidecar(snap).start()

    await lifecycle.serve(start, on_ready=Sidecar.announce)


def main(argv: list[str] | None = None) -> None:
    config.main("sidecar", run, argv, loader=SidecarSnapshot.load)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
