"""The process zygote's pure parts: what it may fork, how it preloads, how it exits.

Forking into pods is judged by the kernel suite (every app and proxy of every lab
starts this way, and answers real clients)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netlab.kernel import zygote


def test_only_python_dash_m_with_this_interpreter_is_forked() -> None:
    py = sys.executable
    assert zygote.eligible([py, "-m", "netlab.dataplane.apps", "http-echo", "--port", "8080"])
    assert not zygote.eligible(["/usr/bin/socat", "-", "TCP:1.2.3.4:80"])  # a user's command
    assert not zygote.eligible(["/some/other/python3", "-m", "http.server"])  # not our interpreter
    assert not zygote.eligible([py, "script.py"])
    assert not zygote.eligible([py, "-m"])
    assert zygote.module_of([py, "-m", "netlab.dataplane.dns", "--config", "x"]) == "netlab.dataplane.dns"


def test_preload_imports_the_image_modules_and_forgets_the_entry() -> None:
    for name in [m for m in sys.modules if m.startswith("netlab.dataplane.apps")]:
        del sys.modules[name]
    zygote.preload("netlab.dataplane.apps")
    # what the apps' __main__ names in PRELOAD is imported ahead of the fork...
    assert "netlab.dataplane.apps.http_echo" in sys.modules
    assert "netlab.dataplane.apps.reverse_proxy" in sys.modules
    # ...and the entry is left out, so runpy runs it afresh as `python -m` would
    assert "netlab.dataplane.apps.__main__" not in sys.modules


def test_preload_of_a_plain_module_forgets_it_too() -> None:
    sys.modules.pop("netlab.kernel.supervisor", None)
    zygote.preload("netlab.kernel.supervisor")
    assert "netlab.kernel.supervisor" not in sys.modules
    assert "netlab.kernel.processes" in sys.modules  # what it imports stays


@pytest.mark.parametrize("code, expected", [(None, 0), (0, 0), (3, 3), ("usage: bad", 1)])
def test_exit_codes_are_the_interpreters(code: object, expected: int,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert zygote._exit_code(SystemExit(code)) == expected
    if isinstance(code, str):
        assert code in capsys.readouterr().err  # printed, as `sys.exit("...")` prints it


MAIN_PROBE = """
import json, sys
print(json.dumps({"name": __name__, "spec": __spec__.name, "package": __package__,
                  "file": __file__, "argv": sys.argv, "main": sys.modules["__main__"].__dict__ is globals()}))
"""


@pytest.mark.parametrize("layout", ["module", "package"])
def test_run_executes_the_module_as_python_dash_m_does(layout: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import atexit
    import threading

    if layout == "module":
        (tmp_path / "probe_mod.py").write_text(MAIN_PROBE)
        name = "probe_mod"
    else:
        (tmp_path / "probe_pkg").mkdir()
        (tmp_path / "probe_pkg" / "__init__.py").write_text("")
        (tmp_path / "probe_pkg" / "__main__.py").write_text(MAIN_PROBE)
        name = "probe_pkg"
    argv = [sys.executable, "-m", name, "--flag", "x"]
    real = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}).stdout
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # _run sets it, as a child would
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    monkeypatch.setattr(threading, "_shutdown", lambda: None)
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: None)
    assert zygote._run(zygote.entry_of(name), argv) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(real)


def test_a_module_that_cannot_be_found_is_an_import_error() -> None:
    with pytest.raises(ImportError, match="no_such_module_here"):
        zygote.entry_of("no_such_module_here")


def test_a_foreign_command_starts_afresh_and_needs_no_zygote(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(zygote.processes, "spawn", lambda name, netns, argv, *a, **k: started.append(list(argv)))
    monkeypatch.setattr(zygote, "Zygote", lambda *a, **k: pytest.fail("no zygote for a foreign command"))
    zygote.spawn("app/ns/pod/c", "nl-x-pod-ns.pod", ["/usr/bin/socat", "-"], "/tmp/log")
    assert started == [["/usr/bin/socat", "-"]]


def test_a_zygote_that_is_gone_falls_back_to_a_fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    class Gone:
        def alive(self) -> bool:
            return True

        def spawn_many(self, *a: object, **k: object) -> None:
            raise zygote.ZygoteGone("broken pipe")

    started: list[str] = []
    monkeypatch.setattr(zygote, "_shared", {"netlab.dataplane.dns": Gone()})
    monkeypatch.setattr(zygote.processes, "spawn", lambda name, *a, **k: started.append(name))
    zygote.spawn("dns", "nl-x-fabric", [sys.executable, "-m", "netlab.dataplane.dns"], "/tmp/log")
    assert started == ["dns"]


def test_spawn_many_keeps_order_and_sends_each_entry_module_to_its_own_zygote(
        monkeypatch: pytest.MonkeyPatch) -> None:
    py = sys.executable
    batches: list[tuple[str, list[str]]] = []

    def forked(module: str, starts: list[zygote.Start]) -> list[str]:
        batches.append((module, [s.name for s in starts]))
        return [f"forked {s.name}" for s in starts]

    monkeypatch.setattr(zygote, "_forked", forked)
    monkeypatch.setattr(zygote, "_fresh", lambda s: f"fresh {s.name}")
    app = [py, "-m", "netlab.dataplane.apps", "http-echo", "--port", "80"]
    starts = [zygote.Start(f"p{i}", "ns", app, "/tmp/log") for i in range(zygote.BATCH + 2)]
    starts.insert(1, zygote.Start("socat", "ns", ["/usr/bin/socat", "-"], "/tmp/log"))
    starts.insert(3, zygote.Start("dns", "ns", [py, "-m", "netlab.dataplane.dns"], "/tmp/log"))
    got = zygote.spawn_many(starts)
    assert got == [("fresh " if s.name == "socat" else "forked ") + s.name for s in starts]
    assert [(m, len(b)) for m, b in batches] == [("netlab.dataplane.apps", zygote.BATCH),
                                                 ("netlab.dataplane.apps", 2),
                                                 ("netlab.dataplane.dns", 1)]


def test_warm_starts_one_zygote_per_entry_module_and_reuses_live_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    class Live:
        def __init__(self, modules: list[str]) -> None:
            started.append(list(modules))

        def alive(self) -> bool:
            return True

    monkeypatch.setattr(zygote, "_shared", {})
    monkeypatch.setattr(zygote, "Zygote", Live)
    zygote.warm(["netlab.dataplane.apps", "netlab.dataplane.dns"])
    zygote.warm(["netlab.dataplane.apps", "netlab.kernel.supervisor"])
    assert started == [["netlab.dataplane.apps"], ["netlab.dataplane.dns"], ["netlab.kernel.supervisor"]]


class _FakeZygote(zygote.Zygote):
    """The starter's half over a real socketpair, with a scripted zygote on the other end."""

    def __init__(self, answer: dict[str, object]) -> None:  # no process: the test answers
        import socket
        import threading

        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._lock = threading.Lock()
        self.requests: list[dict[str, object]] = []
        self.fds: list[int] = []

        def reply() -> None:
            msg, fds, _, _ = socket.recv_fds(theirs, zygote.MAX_MESSAGE, zygote.BATCH)
            self.requests.append(json.loads(msg))
            self.fds = fds
            for fd in fds:
                os.close(fd)
            theirs.send(json.dumps(answer).encode())
            theirs.close()

        threading.Thread(target=reply, daemon=True).start()

    @property
    def pid(self) -> int:
        return 0


def _starts(n: int, ready: bool) -> list[zygote.Start]:
    from netlab.readiness import ReadyPipe

    argv = [sys.executable, "-m", "netlab.dataplane.apps", "http-echo", "--port", "80"]
    return [zygote.Start(f"p{i}", "ns", argv, f"/tmp/log{i}", env={"X": str(i)},
                         ready=ReadyPipe() if ready else None) for i in range(n)]


def test_one_request_carries_the_batch_and_its_ready_pipes_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zygote.processes, "starttime", lambda pid: 1)
    z = _FakeZygote({"pids": [101, 102, 103]})
    starts = _starts(3, ready=True)
    records = z.spawn_many(starts)
    assert [(r.name, r.pid) for r in records] == [("p0", 101), ("p1", 102), ("p2", 103)]
    (request,) = z.requests
    assert [b["log"] for b in request["batch"]] == ["/tmp/log0", "/tmp/log1", "/tmp/log2"]  # type: ignore[index]
    assert [b["env"] for b in request["batch"]] == [{"X": "0"}, {"X": "1"}, {"X": "2"}]  # type: ignore[index]
    assert request["env"] == dict(os.environ) and len(z.fds) == 3
    assert all(s.ready is not None and s.ready.pass_fds() == (-1,) for s in starts)  # write ends closed here


def test_a_batch_that_stopped_early_names_the_first_process_not_started(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zygote.processes, "starttime", lambda pid: 1)
    z = _FakeZygote({"pids": [101], "error": "fork: Resource temporarily unavailable"})
    starts = _starts(3, ready=True)
    with pytest.raises(zygote.KernelError, match="could not start p1: fork: Resource"):
        z.spawn_many(starts)
    assert starts[0].ready is not None and starts[0].ready.pass_fds() == (-1,)  # p0 was forked
    assert starts[1].ready is not None and starts[1].ready.pass_fds() != (-1,)  # p1 was not
