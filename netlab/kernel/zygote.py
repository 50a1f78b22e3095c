"""A pre-imported interpreter that forks netlab's own processes into their pods.

Why: a lab of 100 echo-server pods started 100 fresh interpreters, each importing
asyncio, h11, ssl and netlab's modules on its own: about 9 s of CPU on a 2-core
machine, and 13 MiB of PSS per pod. Here one interpreter (the zygote) imports those
modules once; for each process `up` starts, it forks, and the child places itself
exactly as `processes.start` places a process (a session of its own, output to its
log file, stdin from /dev/null, its argv and environment where /proc/PID/cmdline and
environ show them, setns into the pod's netns, a private mount namespace with /sys
remounted and the pod's resolv.conf bind-mounted, then uid/gid; the same
`processes._enter`), gets the ready pipe, and runs the module as `python -m` would
(its code compiled once in the zygote, executed in a fresh `__main__` with its spec
and `sys.argv` as given). The child is a separate
process per pod, recorded by pid and start time, stopped by SIGTERM to its process
group and restarted by the supervisor like any other (a restart starts a fresh
interpreter from the same argv). Pages the zygote imported stay shared between the
children, so PSS per pod falls too.

Only `python -m MODULE ...` with netlab's own interpreter is forked here (`eligible`);
any other command is started by `processes.start` as before (`spawn` picks).

Each entry module gets a zygote of its own (`python -m netlab.dataplane.apps` one, the
DNS server another, and so on; why: the comment above `_shared`), serving the process
that builds labs (`netlab up`, a `netlab lab run` that builds seven instances, a test
session), started on first use (`warm`) and importing its module at once. A zygote is
no lab's: it stays in the host's network and mount namespaces, which it never changes,
holds no lab file open, and exits when its starter's socket closes, which the kernel
does when the starter exits or dies, so it never outlives it. Its children are the
zygote's until it exits, then the host init's, as processes started by `netlab up` are
once `up` exits. Should a zygote be gone, `spawn` starts a fresh process instead.

Protocol (both halves are here): the starter sends one JSON request for up to BATCH
processes (`spawn_many`: the environment and working directory once, then each
process' argv, netns, log, resolv.conf, extra env, uid, gid), with the ready pipes'
write ends as SCM_RIGHTS fds in the same order; the zygote forks them one after
another and answers {"pids": [...]} once it forked them, with "error" if it stopped
early. Why a batch: see the comment in `serve`.

A module may name more modules to import ahead of the fork in a `PRELOAD` tuple in
its `__main__` (the built-in apps import their image's module only after parsing
arguments, to start fast as a fresh interpreter). A module so named may define
`warm()`, which the zygote runs once after importing it (on a thread of its own, in a
scratch network namespace: `_warm`). Why: CPython 3.11 keeps reference counts in the
objects and specialises bytecode in place as it runs, so the first use of shared code in
each child copies the pages it writes. Building the apps' argument parser and serving
two loopback requests in the zygote does those writes once; for the proxies, working out
the snapshot decoders and one TLS handshake in memory (dataplane/proxy/config.py). What each child still owns
is mostly reference counts it writes as it runs (CPython 3.11 has no immortal objects)
and its own allocations. Measured by `netlab bench topology --mesh ambient --servers
100` after every server has answered once: 7.3 MiB PSS per echo server before the
warm-ups, the compiled entry (`MainCode`), the environment diff (`_child`) and the
batches (`serve`); 5.4-5.5 MiB after; 4.3 MiB with a zygote per entry module
(docs/apps.md).
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import dataclasses
import gc
import importlib
import importlib.util
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import traceback
import types
from importlib.machinery import ModuleSpec
from types import CodeType
from typing import Any, Iterable, Sequence

from netlab.errors import KernelError
from netlab.kernel import netns as nsmod
from netlab.kernel import processes
from netlab.kernel.ownership import ProcessRecord
from netlab.readiness import ENV, ReadyPipe

READY_FD = 3  # where the child finds its ready pipe (NETLAB_READY_FD says so)
REPLY_TIMEOUT = 60.0  # the first reply waits for the zygote's imports
MAX_MESSAGE = 1 << 20
# Processes per request. Their ready pipes travel as SCM_RIGHTS fds (the kernel takes at
# most 253 in one message), and the request stays well under the socket's buffer.
BATCH = 64
WARM_TIMEOUT = 10.0  # seconds for one module's warm(), after which the zygote goes on


def eligible(argv: Sequence[str], python: str = sys.executable) -> bool:
    """`python -m MODULE ...` with this interpreter: what the zygote can run by forking."""
    return len(argv) >= 3 and argv[0] == python and argv[1] == "-m"


def module_of(argv: Sequence[str]) -> str:
    return argv[2]


# -- the starter's half -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Start:
    """One process to start, with what `processes.spawn` takes."""

    name: str
    netns: str
    argv: Sequence[str]
    log: str
    resolv: str | None = None
    env: dict[str, str] | None = None
    uid: int = 0
    gid: int = 0
    ready: ReadyPipe | None = None


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

    def spawn_many(self, starts: Sequence[Start]) -> list[ProcessRecord]:
        """As `processes.spawn` for each, forked from the zygote, in one message (all
        `starts` must be `eligible`; at most BATCH of them)."""
        if len(starts) > BATCH:
            raise ValueError(f"at most {BATCH} processes per batch")
        request = {"env": dict(os.environ), "cwd": os.getcwd(),
                   "batch": [{"argv": list(s.argv), "netns": s.netns, "log": s.log, "resolv": s.resolv,
                              "env": dict(s.env or {}), "uid": s.uid, "gid": s.gid,
                              "ready": s.ready is not None} for s in starts]}
        fds = [fd for s in starts if s.ready is not None for fd in s.ready.pass_fds()]
        names = ", ".join(s.name for s in starts[:3]) + (" ..." if len(starts) > 3 else "")
        with self._lock:
            try:
                socket.send_fds(self._sock, [json.dumps(request).encode()], fds)
            except OSError as e:  # nothing was forked: the caller may start them afresh
                raise ZygoteGone(str(e)) from e
            try:
                reply = self._sock.recv(MAX_MESSAGE)
            except OSError as e:
                raise KernelError(f"the process zygote (pid {self.pid}) did not answer for {names}: {e}") from e
        if not reply:
            raise KernelError(f"the process zygote (pid {self.pid}) exited while starting {names}")
        answer = json.loads(reply)
        for s in starts[:len(answer["pids"])]:
            if s.ready is not None:
                s.ready.started()  # only now: a fresh start after ZygoteGone still needs the write end
        if "error" in answer:
            # Those forked live in the lab's namespaces, where teardown finds them.
            failed = starts[len(answer["pids"])].name
            raise KernelError(f"the process zygote could not start {failed}: {answer['error']}")
        return [processes.record(s.name, s.netns, int(pid), s.log) for s, pid in zip(starts, answer["pids"])]

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


# One zygote per entry module (`python -m MODULE`), each importing only that program's
# world. Why not one for all: a child writes reference counts on the objects it uses,
# and each write copies the whole 4 KiB page it lands on. In a zygote that had also
# imported the CA, DNS, ztunnel and the supervisor (pyroute2, cryptography, h2,
# prometheus_client), an echo server's objects lay on pages shared with theirs, so it
# copied more pages for the same work (docs/apps.md has the figures).
_shared: dict[str, Zygote] = {}
_shared_lock = threading.Lock()


def _zygote_for(module: str) -> Zygote | None:
    """The live zygote for this entry module, started (and told to import it) if there
    is none; None when one cannot be started."""
    with _shared_lock:
        z = _shared.get(module)
        if z is None or not z.alive():
            try:
                z = _shared[module] = Zygote([module])
            except OSError:
                _shared.pop(module, None)
                return None  # `spawn` starts processes afresh
        return z


def warm(modules: Iterable[str]) -> None:
    """Start a zygote for each entry module that has none, each importing its module at
    once, so the imports overlap the caller's work (the applier calls this first)."""
    for module in modules:
        _zygote_for(module)


def spawn(name: str, netns_name: str, argv: Sequence[str], log_path: str,
          resolv_conf_path: str | None = None, env: dict[str, str] | None = None,
          uid: int = 0, gid: int = 0, ready: ReadyPipe | None = None) -> ProcessRecord:
    """`processes.spawn`, forked from a zygote when it can run `argv`."""
    return spawn_many([Start(name, netns_name, argv, log_path, resolv_conf_path, env, uid, gid, ready)])[0]


def spawn_many(starts: Sequence[Start]) -> list[ProcessRecord]:
    """`processes.spawn` for each; records in the order given. The `eligible` ones are
    forked from their entry module's zygote, BATCH per request; anything else (or all,
    with no zygote) starts afresh."""
    records: dict[int, ProcessRecord] = {}
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(starts):
        if eligible(s.argv):
            groups.setdefault(module_of(s.argv), []).append(i)
        else:
            records[i] = _fresh(s)
    for module, indexes in groups.items():
        for k in range(0, len(indexes), BATCH):
            chunk = indexes[k:k + BATCH]
            records.update(zip(chunk, _forked(module, [starts[i] for i in chunk])))
    return [records[i] for i in range(len(starts))]


def _forked(module: str, starts: Sequence[Start]) -> list[ProcessRecord]:
    z = _zygote_for(module)
    if z is not None:
        try:
            return z.spawn_many(starts)
        except ZygoteGone:
            pass
    return [_fresh(s) for s in starts]


def _fresh(s: Start) -> ProcessRecord:
    return processes.spawn(s.name, s.netns, s.argv, s.log, s.resolv, env=s.env, uid=s.uid,
                           gid=s.gid, ready=s.ready)


# -- the zygote's half --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MainCode:
    """What `python -m MODULE` executes: the entry module's spec and compiled code."""

    spec: ModuleSpec
    code: CodeType


def entry_of(module: str) -> MainCode:
    """Find and compile what `python -m module` runs, as runpy does (a package runs its
    `__main__`), once in the zygote, so no child searches sys.path or reads a .pyc."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations is not None:
        spec = importlib.util.find_spec(f"{module}.__main__")
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
        raise ImportError(f"No module named {module}")
    code = spec.loader.get_code(spec.name)  # type: ignore[attr-defined]
    if code is None:
        raise ImportError(f"{module} has no code to run")
    return MainCode(spec, code)


def preload(module: str) -> MainCode:
    """Import what `python -m module` will import and compile its entry, then forget the
    entry module itself, so each child executes it afresh (as `python -m` does)."""
    importlib.import_module(module)
    main = entry_of(module)
    mod = importlib.import_module(main.spec.name)
    for extra in getattr(mod, "PRELOAD", ()):
        _warm(importlib.import_module(extra))
    sys.modules.pop(main.spec.name, None)
    return main


def _warm(module: Any) -> None:
    """Run the module's `warm()`, if it has one: work each child would repeat on its
    own pages (see the module docstring).

    It runs on a thread of its own that first unshares a network namespace of its own
    (with `lo` up), so it may listen and connect on loopback as the children will,
    without touching the host's network; the namespace goes with the thread. Its
    output goes nowhere, and its failure only costs memory, so it is never the
    zygote's: without the privilege to unshare, nothing is warmed."""
    warm = getattr(module, "warm", None)
    if not callable(warm):
        return

    def scratch() -> None:
        try:
            nsmod.unshare(nsmod.CLONE_NEWNET)  # this thread's only
            nsmod.loopback_up()
            warm()
        except Exception:  # noqa: BLE001 - the child will do the same work, and meet any error
            pass

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        thread = threading.Thread(target=scratch, name=f"warm {module.__name__}", daemon=True)
        thread.start()
        thread.join(WARM_TIMEOUT)  # a warm-up is only a cache: never wait on one for long


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _run(main: MainCode, argv: list[str]) -> int:
    """Run the module's code as `python -m` would (a fresh `__main__` with its spec,
    sys.argv[0] its file); its exit code."""
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=main.spec.origin, __cached__=main.spec.cached, __doc__=None,
                           __loader__=main.spec.loader, __package__=main.spec.parent,
                           __spec__=main.spec, __builtins__=builtins)
    sys.modules["__main__"] = module
    sys.argv = [main.spec.origin or argv[2], *argv[3:]]
    try:
        exec(main.code, module.__dict__)
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


# prctl(PR_SET_MM, PR_SET_MM_MAP, &struct prctl_mm_map, sizeof): linux/prctl.h. Why the
# whole map and not PR_SET_MM_ARG_START and friends: those need CAP_SYS_RESOURCE, which
# root may lack (a container's bounding set); the map is what CRIU restores with, and it
# is allowed without it as long as /proc/PID/exe is left alone (exe_fd -1).
_PR_SET_MM, _PR_SET_MM_MAP = 35, 14
# start_code end_code start_data end_data start_brk brk start_stack arg_start arg_end
# env_start env_end auxv (u64 each), auxv_size exe_fd (u32 each)
_MM_MAP = struct.Struct("=12Q2I")
_KEEP_EXE = 0xFFFFFFFF
_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.sbrk.argtypes = [ctypes.c_long]
_libc.sbrk.restype = ctypes.c_void_p
_blocks: list[bytes] = []  # the child's command line and environment: the kernel reads them here
# Where a bytes object's data starts, relative to id(): CPython's PyBytesObject puts
# ob_sval last, and __basicsize__ counts one byte of it. Why not ctypes buffers: each
# create_string_buffer makes a new array type, and the objects it touches cost every
# child about 0.2 MiB of copied pages (scripts/profile_echo_memory.py).
_BYTES_DATA = bytes.__basicsize__ - 1


def _address(data: bytes) -> int:
    return id(data) + _BYTES_DATA


def _show_as_started(argv: Sequence[str], env: dict[str, str]) -> bool:
    """Point /proc/self/cmdline and /proc/self/environ (what ps, pgrep -f, pkill -f and
    `ps e` read) at this child's own argv and environment, as a process exec'd with them
    has, not at the zygote's. Every other field of the map is kept as it is (read from
    /proc/self/stat, and the break from sbrk(0)). False if the kernel refused: then they
    stay the zygote's, and nothing else differs."""
    arg = b"".join(os.fsencode(a) + b"\0" for a in argv)
    env_block = b"".join(os.fsencode(f"{k}={v}") + b"\0" for k, v in env.items())
    _blocks[:] = [arg, env_block]
    fd = os.open("/proc/self/stat", os.O_RDONLY)
    try:
        fields = os.read(fd, 4096).rsplit(b")", 1)[1].split()  # fields from the 3rd (state) on
    finally:
        os.close(fd)

    def stat(n: int) -> int:  # proc(5) numbers the fields from 1
        return int(fields[n - 3])

    at, env_at = _address(arg), _address(env_block)
    mm = _MM_MAP.pack(stat(26), stat(27), stat(45), stat(46), stat(47), _libc.sbrk(0) or 0, stat(28),
                      at, at + len(arg), env_at, env_at + len(env_block), 0, 0, _KEEP_EXE)
    _blocks.append(mm)
    return _libc.prctl(_PR_SET_MM, _PR_SET_MM_MAP, _address(mm), len(mm), 0) == 0


def _child(request: dict[str, Any], base_env: dict[str, str], cwd: str, main: MainCode | Exception,
           ready_fd: int | None) -> None:
    """In the forked child: place the process as `processes.start` does, then run it."""
    code = 1
    try:
        os.setsid()
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        env = {**base_env, **request["env"]}
        if request["ready"] and ready_fd is not None:
            os.dup2(ready_fd, READY_FD)  # dup2 leaves it inheritable, as pass_fds does
            env[ENV] = str(READY_FD)
            low = READY_FD + 1
        else:
            env.pop(ENV, None)
            low = 3
        os.closerange(low, 1 << 16)  # the socket, the zygote's files, the batch's other fds
        os.chdir(cwd)  # the starter's, as a process it started would have
        _show_as_started(request["argv"], env)
        processes._enter(request["netns"], request["resolv"], request["uid"], request["gid"])
        # Only what differs: the child's environment is mostly the zygote's own, and each
        # putenv/unsetenv of all of it rewrote about 0.7 MiB of shared malloc pages.
        for k in [k for k in os.environ if k not in env]:
            del os.environ[k]
        os.environ.update({k: v for k, v in env.items() if os.environ.get(k) != v})
        if isinstance(main, Exception):  # what `python -m` says of a module it cannot run
            traceback.print_exception(main)
        else:
            code = _run(main, request["argv"])
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


def _preload_all(modules: Iterable[str], done: dict[str, MainCode | Exception]) -> None:
    fresh = [m for m in modules if m not in done]
    for module in fresh:
        try:
            done[module] = preload(module)
        except Exception as e:  # noqa: BLE001 - the request that names it is told why
            done[module] = e
    if fresh:
        gc.collect()
        gc.freeze()  # the collector then leaves the shared objects' pages alone in the children


def serve(control: socket.socket, preloaded: dict[str, MainCode | Exception]) -> None:
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, BATCH)
        except ConnectionResetError:
            return
        _reap()
        if not msg:
            return  # the starter closed its end (done, or dead)
        try:
            request = json.loads(msg)
            batch = request["batch"]
            if sum(1 for r in batch if r["ready"]) != len(fds):
                raise ValueError(f"{len(fds)} ready pipes arrived for {len(batch)} processes")
        except (ValueError, KeyError, TypeError) as e:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"pids": [], "error": str(e)}).encode())
            continue
        _preload_all([module_of(r["argv"]) for r in batch], preloaded)
        received = iter(fds)
        ready = [next(received) if r["ready"] else None for r in batch]
        mains = [preloaded[module_of(r["argv"])] for r in batch]
        sys.stdout.flush()
        sys.stderr.flush()
        pids: list[int] = []
        error = None
        # Nothing but forks in this loop: each page the zygote writes after a fork stays
        # behind as the child's own copy, and its request handling (the JSON above, the
        # reply below) writes about 0.4 MiB. Done once per batch, those copies are shared
        # by the whole batch instead of owned by every child.
        for r, fd, main in zip(batch, ready, mains):
            try:
                pid = os.fork()
            except OSError as e:
                error = str(e)
                break
            if pid == 0:
                _child(r, request["env"], request["cwd"], main, fd)
            pids.append(pid)
        for fd in fds:
            os.close(fd)
        control.send(json.dumps({"pids": pids, **({"error": error} if error else {})}).encode())


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    control = socket.socket(fileno=int(args[0]))
    preloaded: dict[str, MainCode | Exception] = {}
    _preload_all(args[1:], preloaded)
    serve(control, preloaded)


if __name__ == "__main__":
    main()
