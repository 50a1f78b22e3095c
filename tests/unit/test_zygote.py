"""The process zygote's pure parts: what it may fork, how it preloads, how it exits.

Forking into pods is judged by the kernel suite (every app and proxy of every lab
starts this way, and answers real clients)."""

from __future__ import annotations

import sys

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


def test_run_executes_the_module_as_main(tmp_path: object, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import atexit
    import threading

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # _run sets it, as a child would
    monkeypatch.setattr(threading, "_shutdown", lambda: None)
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: None)
    code = zygote._run([sys.executable, "-m", "json.tool", "--help"])
    assert code == 0
    assert "json.tool" in capsys.readouterr().out  # argparse's prog comes from sys.argv[0]


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

        def spawn(self, *a: object, **k: object) -> None:
            raise zygote.ZygoteGone("broken pipe")

    started: list[str] = []
    monkeypatch.setattr(zygote, "_shared", Gone())
    monkeypatch.setattr(zygote.processes, "spawn", lambda name, *a, **k: started.append(name))
    zygote.spawn("dns", "nl-x-fabric", [sys.executable, "-m", "netlab.dataplane.dns"], "/tmp/log")
    assert started == ["dns"]
