"""A pre-imported interpreter that forks netlab's own processes into their pods.

Why: a lab of 100 echo-server pods started 100 fresh interpreters, each importing
asyncio, h11, ssl and netlab's modules on its own: about 9 s of CPU on a 2-core
machine, and 13 MiB of PSS per pod. Here one interpreter (the zygote) imports those
modules once; for each process `up` starts, it forks, and the child places itself
exactly as `processes.start` places a process (a session of its own, output to its
log file, stdin from /dev/null, setns into the pod's netns, a private mount namespace
with /sys remounted and the pod's resolv.conf bind-mounted, then uid/gid; the same
`processes._enter`), gets the ready pipe, and runs the module as `python -m` would
(`runpy`, `__name__ == "__main__"`, `sys.argv` as given). The child is a separate
process per pod, recorded by pid and start time, stopped by SIGTERM to its process
group and restarted by the supervisor like any other (a restart starts a fresh
interpreter from the same argv). Pages the zygote imported stay shared between the
children, so PSS per pod falls too.

Only `python -m MODULE ...` with netlab's own interpreter is forked here (`eligible`);
any other command is started by `processes.start` as before (`spawn` picks).

One zygote serves the process that builds labs (`netlab up`, a `netlab lab run` that
builds seven instances, a test session), started on first use (`warm`). It is no
lab's: it stays in the host's network and mount namespaces, which it never changes,
holds no lab file open, and exits when its starter's socket closes, which the kernel
does when the starter exits or dies, so it never outlives it. It imports a module the
first time a request names it. Its children are the zygote's until it exits, then
the host init's, as processes started by `netlab up` are once `up` exits. Should
the zygote be gone, `spawn` starts a fresh process instead.

Protocol (both halves are here): the starter sends one JSON request per process,
with the ready pipe's write end as an SCM_RIGHTS fd when there is one; the zygote
answers {"pid": N} once it forked, or {"error": "..."}.

A module may name more modules to import ahead of the fork in a `PRELOAD` tuple in
its `__main__` (the built-in apps import their image's module only after parsing
arguments, to start fast as a fresh interpreter).
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import os
import runpy
import socket
import subprocess
import sys
import threading
import traceback
from typing import Any, Iterable, Sequence

from netlab.errors import KernelError
from netlab.kernel import processes
from netlab.kernel.ownership import ProcessRecord
from netlab.readiness import ENV, ReadyPipe

READY_FD = 3  # where the child finds its ready pipe (NETLAB_READY_FD says so)
REPLY_TIMEOUT = 60.0  # the first reply waits for the zygote's imports
MAX_MESSAGE = 1 << 20


def eligible(argv: Sequence[str], python: str = sys.executable) -> bool:
    """`python -m MODULE ...` with this interpreter: what the zygote can run by forking."""
    return len(argv) >= 3 and argv[0] == python and argv[1] == "-m"


def module_of(argv: Sequence[str]) -> str:
    return argv[2]


# -- the starter's half -------------------------------------------------------------------


class ZygoteGone(Exception):
    """The zygote is not there to fork (it exited, or was killed): start afresh instead."""


class Zygote:
    """The starter's handle: start it, spawn through it, close it."""

    def __init__(self, modules: Iterable[str] = ()) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = mine
        self._lock = threading.Lock()
        try:
            # No preexec_fn: nothing runs between fork and exec, so this is safe even if
            # the starter has threads; the zygote stays in the host's namespaces.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "netlab.kernel.zygote", str(theirs.fileno()), *modules],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        self._sock.settimeout(REPLY_TIMEOUT)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def spawn(self, name: str, netns_name: str, argv: Sequence[str], log_path: str,
              resolv_conf_path: str | None = None, env: dict[str, str] | None = None,
              uid: int = 0, gid: int = 0, ready: ReadyPipe | None = None) -> ProcessRecord:
        """As `processes.spawn`, forked from the zygote instead of a fresh interpreter."""
        request = {"argv": list(argv), "netns": netns_name, "log": log_path, "resolv": resolv_conf_path,
                   "env": {**os.environ, **(env or {})}, "uid": uid, "gid": gid, "cwd": os.getcwd(),
                   "ready": ready is not None}
        fds = list(ready.pass_fds()) if ready is not None else []
        with self._lock:
            try:
                socket.send_fds(self._sock, [json.dumps(request).encode()], fds)
            except OSError as e:  # nothing was forked: the caller may start it afresh
                raise ZygoteGone(str(e)) from e
            try:
                reply = self._sock.recv(MAX_MESSAGE)
            except OSError as e:
                raise KernelError(f"the process zygote (pid {self.pid}) did not answer for {name}: {e}") from e
        if not reply:
            raise KernelError(f"the process zygote (pid {self.pid}) exited while starting {name}")
        answer = json.loads(reply)
        if "error" in answer:
            raise KernelError(f"the process zygote could not start {name}: {answer['error']}")
        if ready is not None:
            ready.started()  # only now: a fresh start after ZygoteGone still needs the write end
        return processes.record(name, netns_name, int(answer["pid"]), log_path)

    def preload(self, modules: Iterable[str]) -> None:
        """Have the zygote import these now, before the first request needs them."""
        with self._lock:
            try:
                self._sock.send(json.dumps({"preload": list(modules)}).encode())
            except OSError as e:
                raise ZygoteGone(str(e)) from e

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """Close the socket: the zygote exits; its children live on."""
        self._sock.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


_shared: Zygote | None = None
_shared_lock = threading.Lock()


def warm(modules: Iterable[str]) -> None:
    """Start this process' zygote if there is none, and have it import `modules` now,
    so its imports overlap the caller's work (the applier calls this first)."""
    global _shared
    with _shared_lock:
        try:
            if _shared is None or not _shared.alive():
                _shared = Zygote(modules)
            else:
                _shared.preload(modules)
        except (OSError, ZygoteGone):
            _shared = None  # `spawn` starts processes afresh


def spawn(name: str, netns_name: str, argv: Sequence[str], log_path: str,
          resolv_conf_path: str | None = None, env: dict[str, str] | None = None,
          uid: int = 0, gid: int = 0, ready: ReadyPipe | None = None) -> ProcessRecord:
    """`processes.spawn`, forked from this process' zygote when it can run `argv`."""
    global _shared
    if eligible(argv):
        with _shared_lock:
            if _shared is None or not _shared.alive():
                try:
                    _shared = Zygote()
                except OSError:
                    _shared = None
            z = _shared
        if z is not None:
            try:
                return z.spawn(name, netns_name, argv, log_path, resolv_conf_path, env, uid, gid, ready)
            except ZygoteGone:
                pass
    return processes.spawn(name, netns_name, argv, log_path, resolv_conf_path, env=env, uid=uid,
                           gid=gid, ready=ready)


# -- the zygote's half --------------------------------------------------------------------


def preload(module: str) -> None:
    """Import what `python -m module` will import, then forget the entry module itself,
    so runpy executes it afresh in each child (as `python -m` does, without its
    "found in sys.modules" warning)."""
    importlib.import_module(module)
    spec = importlib.util.find_spec(module)
    entry = f"{module}.__main__" if spec is not None and spec.submodule_search_locations else module
    mod = importlib.import_module(entry)
    for extra in getattr(mod, "PRELOAD", ()):
        importlib.import_module(extra)
    sys.modules.pop(entry, None)


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _run(argv: list[str]) -> int:
    """Run `-m MODULE args` in this process as `python -m` would; its exit code."""
    sys.argv = [argv[2], *argv[3:]]  # runpy sets argv[0] to the module's file, as `-m` does
    try:
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = _exit_code(e)
    except BaseException:  # noqa: BLE001 - as the interpreter would: print it, exit 1
        traceback.print_exc()
        code = 1
    try:
        import atexit
        import threading

        threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads, as at exit
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    return code


def _child(request: dict[str, Any], fds: list[int], control: int) -> None:
    """In the forked child: place the process as `processes.start` does, then run it."""
    code = 1
    try:
        os.setsid()
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        env = dict(request["env"])
        if request["ready"] and fds:
            os.dup2(fds[0], READY_FD)  # dup2 leaves it inheritable, as pass_fds does
            env[ENV] = str(READY_FD)
            low = READY_FD + 1
        else:
            env.pop(ENV, None)
            low = 3
        os.closerange(low, 1 << 16)  # the socket, the zygote's files, the received fds
        os.chdir(request["cwd"])  # the starter's, as a process it started would have
        processes._enter(request["netns"], request["resolv"], request["uid"], request["gid"])
        os.environ.clear()
        os.environ.update(env)
        code = _run(request["argv"])
    except BaseException:  # noqa: BLE001 - never return into the zygote's loop
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)


def _reap() -> None:
    """Collect children that already exited (the zygote is their parent while it lives)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _preload_all(modules: Iterable[str], done: set[str]) -> None:
    fresh = [m for m in modules if m not in done]
    for module in fresh:
        done.add(module)
        try:
            preload(module)
        except Exception:  # noqa: BLE001 - the child will meet the same error and report it
            pass
    if fresh:
        gc.collect()
        gc.freeze()  # the collector then leaves the shared objects' pages alone in the children


def serve(control: socket.socket, preloaded: set[str]) -> None:
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 4)
        except ConnectionResetError:
            return
        _reap()
        if not msg:
            return  # the starter closed its end (done, or dead)
        try:
            request = json.loads(msg)
            if "preload" in request:
                _preload_all(request["preload"], preloaded)
                continue
            _preload_all([module_of(request["argv"])], preloaded)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
        except (ValueError, OSError) as e:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"error": str(e)}).encode())
            continue
        if pid == 0:
            _child(request, fds, control.fileno())
        for fd in fds:
            os.close(fd)
        control.send(json.dumps({"pid": pid}).encode())


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    control = socket.socket(fileno=int(args[0]))
    preloaded: set[str] = set()
    _preload_all(args[1:], preloaded)
    serve(control, preloaded)


if __name__ == "__main__":
    main()
