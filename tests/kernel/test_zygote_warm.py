"""The zygote's warm-up runs where it can do no harm: in a network namespace of its own.

`warm()` hooks listen and connect on loopback (apps/http_echo.py). Run in the host's
namespace they would open ports there; the zygote gives each a scratch namespace on a
thread of its own, which goes with the thread.
"""

from __future__ import annotations

import os
import socket
import types

import pytest

from netlab.kernel import zygote

pytestmark = pytest.mark.kernel


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_warm_runs_in_a_scratch_netns_with_loopback_up() -> None:
    seen: dict[str, object] = {}

    def warm() -> None:
        seen["netns"] = _netns_inode()
        with socket.create_server(("127.0.0.1", 0)) as srv:  # needs lo up
            with socket.create_connection(srv.getsockname(), timeout=5):
                seen["connected"] = True
        print("this goes nowhere")

    ours = _netns_inode()
    zygote._warm(types.SimpleNamespace(__name__="probe", warm=warm))
    assert seen.get("connected") is True
    assert seen["netns"] != ours  # not the caller's (here: the host's) namespace
    assert _netns_inode() == ours  # and the caller never left its own


def test_a_failing_warm_is_not_the_zygotes() -> None:
    def warm() -> None:
        raise RuntimeError("boom")

    zygote._warm(types.SimpleNamespace(__name__="probe", warm=warm))  # no exception


def test_a_warm_that_hangs_is_left_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    release = threading.Event()
    monkeypatch.setattr(zygote, "WARM_TIMEOUT", 0.2)
    started = time.monotonic()
    zygote._warm(types.SimpleNamespace(__name__="probe", warm=lambda: release.wait(30)))
    try:
        assert time.monotonic() - started < 10  # went on without it (it waits up to 30 s)
    finally:
        release.set()
