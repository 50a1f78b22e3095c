#!/usr/bin/env python3
"""Where a forked echo server's own memory goes, step by step (run as root).

`netlab bench topology` gives the figure (PSS per echo server); this explains it. It
plays the zygote as netlab's does (kernel/zygote.py: import the apps, warm them, freeze
the collector), forks one `http-echo` into a scratch network namespace, and stops the
child (SIGSTOP) after each step of its start. Between steps a separate process, this
script's first one, which never forked from the zygote, reads the child's
/proc/PID/pagemap: a page the child maps alone (bit 56, "exclusively mapped") is one it
copied or allocated, which is what its Private_Dirty counts. Why the first process
reads and the zygote's stand-in only waits: a page the zygote writes after the fork
becomes the child's alone too, and would be counted against it.

For each step it prints the KiB the child came to own and what lay on those pages
before the fork (the zygote's objects by type, found from the collector's roots), so
a reader can see which objects' reference counts were written. Used for docs/apps.md.

    sudo .venv/bin/python scripts/profile_echo_memory.py [--requests 2] [--top 10] [--also MODULE ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

PAGE = 4096
NETNS = f"nl-memprof-{os.getpid()}"
PORT = 8080
ENTRY = "netlab.dataplane.apps"
STEPS = ("fork", "placed")  # where the child stops itself; then it runs until ready


# -- the zygote's stand-in (a process of its own: `--zygote DIR`) ------------------------


def play_zygote(workdir: str, netns: str, also: list[str]) -> None:
    import gc

    from netlab.kernel import processes, zygote

    preloaded: dict = {}
    zygote._preload_all([ENTRY, *also], preloaded)  # imports, warm(), gc.freeze(), as the zygote does
    main = preloaded[ENTRY]
    if isinstance(main, Exception):
        raise main
    _dump_objects(os.path.join(workdir, "pages.json"))
    gc.collect()
    gc.freeze()
    from netlab.readiness import ENV

    ready_w = int(os.environ.pop(ENV))  # the measurer's ready pipe: it waits on the child's line
    argv = [sys.executable, "-m", ENTRY, "http-echo", "--port", str(PORT), "--name", "profiled"]
    request = {"argv": argv, "netns": netns, "log": os.path.join(workdir, "child.log"),
               "resolv": None, "env": {}, "uid": 0, "gid": 0, "ready": True}
    enter = processes._enter

    def enter_then_stop(*args: object) -> None:  # the step "placed" ends in the pod's netns
        enter(*args)
        os.kill(os.getpid(), signal.SIGSTOP)

    processes._enter = enter_then_stop
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGSTOP)  # step "fork"
        zygote._child(request, dict(os.environ), os.getcwd(), main, ready_w)  # never returns
    os.close(ready_w)
    print(pid, flush=True)  # to the measurer; then only wait, writing nothing
    os.waitpid(pid, 0)


def _dump_objects(path: str) -> None:
    """Every object reachable from the collector's roots, by the page its header is on."""
    import gc

    gc.unfreeze()  # frozen objects are not listed; the caller freezes again
    seen: dict[int, object] = {}
    stack = list(gc.get_objects())
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen[id(o)] = o
        stack.extend(gc.get_referents(o))
    pages: dict[int, list[str]] = collections.defaultdict(list)
    for i, o in seen.items():
        pages[i // PAGE * PAGE].append(type(o).__name__)
    with open(path, "w") as f:
        json.dump(pages, f)


# -- the measurer ---------------------------------------------------------------------------


def owned_pages(pid: int) -> dict[int, str]:
    """The child's writable pages that it maps alone, with the mapping's name."""
    owned: dict[int, str] = {}
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split()
            if "w" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else "[anon]"
            pagemap.seek(start // PAGE * 8)
            data = pagemap.read((end - start) // PAGE * 8)
            for n, entry in enumerate(struct.unpack(f"{len(data) // 8}Q", data)):
                if entry >> 63 and entry >> 56 & 1:  # present, exclusively mapped
                    owned[start + n * PAGE] = name
    return owned


def wait_stopped(pid: int, timeout: float = 30.0) -> None:
    """Until the child has stopped itself (it is not ours to waitpid for)."""
    from netlab.labs.context import poll_until  # the measurer's only: the stand-in stays lean

    def stopped() -> bool:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"

    if not poll_until(stopped, timeout):
        raise SystemExit(f"the child {pid} did not stop within {timeout:.0f} s")


def request() -> None:
    subprocess.run(["ip", "netns", "exec", NETNS, "curl", "-sS", "-o", "/dev/null",
                    f"http://127.0.0.1:{PORT}/"], check=True, timeout=30)


def quiesce(pid: int) -> None:
    """Until the child's owned pages stop growing (its reply was sent before it logged)."""
    last = -1
    for _ in range(50):
        now = len(owned_pages(pid))
        if now == last:
            return
        last = now
        time.sleep(0.05)


def report(step: str, owned: dict[int, str], before: dict[int, str],
           objects: dict[int, list[str]], top: int) -> dict[str, object]:
    new = [p for p in owned if p not in before]
    mappings = collections.Counter(owned[p] for p in new)
    types: collections.Counter[str] = collections.Counter()
    for p in new:
        types.update(set(objects.get(p, ["(no object header)"])))
    print(f"{step:>10}: +{len(new) * 4:5d} KiB (owns {len(owned) * 4} KiB)")
    print(f"{'':>12}by mapping: " + ", ".join(f"{n.rsplit('/', 1)[-1]} {c * 4}" for n, c in mappings.most_common(4)))
    print(f"{'':>12}pages holding: " + ", ".join(f"{t} {c}" for t, c in types.most_common(top)))
    return {"step": step, "kib": len(new) * 4, "owned_kib": len(owned) * 4}


def measure(requests: int, top: int, also: list[str]) -> None:
    from netlab.readiness import ReadyPipe

    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    workdir = tempfile.mkdtemp(prefix="netlab-memprof-")
    zyg = None
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        ready = ReadyPipe()  # the stand-in hands its write end to the child, as the zygote does
        zyg = subprocess.Popen([sys.executable, __file__, "--zygote", workdir, NETNS, *also],
                               stdout=subprocess.PIPE, text=True, pass_fds=ready.pass_fds(),
                               env={**os.environ, **ready.env()})
        ready.started()
        assert zyg.stdout is not None
        pid = int(zyg.stdout.readline())
        with open(os.path.join(workdir, "pages.json")) as f:
            objects = {int(k): v for k, v in json.load(f).items()}
        before: dict[int, str] = {}
        print(f"http-echo forked from a zygote that imported {', '.join([ENTRY, *also])} (pid {pid}); "
              "KiB it came to own at each step:")
        for step in STEPS:
            wait_stopped(pid)
            owned = owned_pages(pid)
            report(step, owned, before, objects, top)
            before = owned
            os.kill(pid, signal.SIGCONT)
        ready.wait(30)  # the server says ready once it listens
        quiesce(pid)
        owned = owned_pages(pid)
        report("ready", owned, before, objects, top)
        before = owned
        for n in range(1, requests + 1):
            request()
            quiesce(pid)
            owned = owned_pages(pid)
            report(f"request {n}", owned, before, objects, top)
            before = owned
        with open(f"/proc/{pid}/smaps_rollup") as f:
            dirty = next(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))
        print(f"{'total':>10}: {len(before) * 4} KiB owned; smaps_rollup Private_Dirty {dirty} KiB")
        os.kill(pid, signal.SIGTERM)
    finally:
        if zyg is not None:
            zyg.wait(10)
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
        subprocess.run(["rm", "-rf", workdir], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--top", type=int, default=10, help="object types to list per step")
    parser.add_argument("--also", nargs="*", default=[], metavar="MODULE",
                        help="entry modules the zygote imports too, after the apps (as one zygote "
                             "for every process did: netlab.dataplane.ca netlab.dataplane.dns "
                             "netlab.dataplane.ztunnel netlab.kernel.supervisor)")
    parser.add_argument("--zygote", nargs="+", metavar="DIR NETNS [MODULE ...]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.zygote:
        play_zygote(args.zygote[0], args.zygote[1], args.zygote[2:])
    else:
        if os.geteuid() != 0:
            raise SystemExit("run as root: it makes a network namespace and reads /proc/PID/pagemap")
        measure(args.requests, args.top, args.also)


if __name__ == "__main__":
    main()
