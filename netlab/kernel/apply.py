"""Apply desired state to the kernel, and destroy exactly what a lab owns.

All netlink work happens in this process: one pyroute2 socket per namespace, opened
while this thread is inside it (netns.entered), so nothing forks per object. Only
iptables-restore and ipset run as subprocesses: once per namespace, atomically, as
istio-cni does. The iptables-restore runs overlap the netlink work (two worker threads,
each started from inside its namespace, so the fork is a cheap vfork with no Python in
the child); every ruleset is in place before the first process starts.

netlab's own processes (`python -m netlab...`) are forked from pre-imported
interpreters (kernel/zygote.py, one per entry module), started before anything else is
built, so their imports overlap the build; other commands start as fresh processes.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netlab.errors import KernelError
from netlab.kernel import netns as nsmod
from netlab.kernel import processes
from netlab.kernel.interrupts import Guard
from netlab.kernel.ownership import SUPERVISOR, LabRecord, ProcessRecord
from netlab.kernel import zygote
from netlab.plan.state import DesiredState, ProcessSpec, ReadyCheck
from netlab.readiness import NotReady, ReadyPipe

Progress = Callable[[str, int, int], None]  # (step, done, total)
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
LOOPBACK_IFINDEX = 1  # the kernel gives lo index 1 in every namespace
RULESET_WORKERS = 2  # iptables-restore runs in flight beside the netlink work


def _noop(step: str, done: int, total: int) -> None:
    pass


class Applier:
    """Builds a desired state, journaling into `record` before each kernel object.

    With a `guard` (netlab.kernel.interrupts), a SIGINT or SIGTERM takes effect at the
    next object or while waiting for a process to be ready, as an `Interrupted` raised
    here; the caller rolls back.
    """

    def __init__(self, record: LabRecord, progress: Progress = _noop, guard: Guard | None = None) -> None:
        self.record = record
        self.guard = guard
        self._progress = progress
        self.sockets: dict[str, IPRoute] = {}
        self._ifindex: dict[tuple[str, str], int] = {}
        self._next_index: dict[str, int] = {}  # per namespace: the next ifindex to give
        self._ready: dict[str, ReadyPipe] = {}  # process name -> its ready pipe
        self._restart: list[processes.RestartSpec] = []  # how the supervisor starts each again
        self._rules_pool: ThreadPoolExecutor | None = None
        self._rules: list[Future[None]] = []

    # -- public -------------------------------------------------------------------------
    def apply(self, state: DesiredState, ready_timeout: float = 20.0) -> None:
        try:
            self._warm_zygote(state)
            self._namespaces(state)
            self._ipsets(state)  # before the rulesets: the host-probe SNAT rule names its set
            self._start_rulesets(state)
            self._links(state)
            self._addresses_routes(state)
            self._sysctls(state)
            self._rulesets(state)
            self._processes(state, ready_timeout)
            self._supervisor(state, ready_timeout)
        except NetlinkError as e:
            raise KernelError(f"netlink refused a change: {e}") from e
        finally:
            self._stop_rulesets()
            for s in self.sockets.values():
                s.close()
            self.sockets.clear()
            for pipe in self._ready.values():
                pipe.close()
            self._ready.clear()

    def progress(self, step: str, done: int, total: int) -> None:
        """Report progress; also the checkpoint where an interrupt takes effect."""
        self.checkpoint()
        self._progress(step, done, total)

    def checkpoint(self) -> None:
        if self.guard is not None:
            self.guard.check()

    # -- steps --------------------------------------------------------------------------
    def _namespaces(self, state: DesiredState) -> None:
        names = [n.name for n in state.netns]
        # Journal first: a crash after this line still names every namespace to remove.
        self.record.netns = names
        self.record.save()
        for i, name in enumerate(names):
            self.checkpoint()
            nsmod.create(name)
            with nsmod.entered(name):
                self.sockets[name] = IPRoute()
            self.sockets[name].link("set", index=LOOPBACK_IFINDEX, state="up")
            if i % 20 == 0:
                self.progress("namespaces", i + 1, len(names))
        self.progress("namespaces", len(names), len(names))

    def _links(self, state: DesiredState) -> None:
        # Every link gets its ifindex chosen here (`_new_index`) and its bridge named in
        # the create request: a veth is then two requests (create, peer up) instead of
        # five with the lookups by name and the separate enslave (issue 16's profile).
        for br in state.bridges:
            index = self._new_index(br.netns, br.name)
            self.sockets[br.netns].link("add", ifname=br.name, kind="bridge", index=index)
            self._up(br.netns, br.name)
        for i, v in enumerate(state.veths):
            self.checkpoint()
            ipr = self.sockets[v.netns]
            peer: dict = {"ifname": v.peer_name, "index": self._new_index(v.peer_netns, v.peer_name)}
            if v.peer_mac:
                peer["address"] = v.peer_mac
            kw: dict = {"address": v.mac} if v.mac else {}
            if v.master:
                kw["master"] = self._index(v.netns, v.master)
            fd = os.open(nsmod.path(v.peer_netns), os.O_RDONLY)
            try:
                peer["net_ns_fd"] = fd
                # The local end comes up with the create; the kernel ignores IFF_UP for the peer.
                ipr.link("add", ifname=v.name, kind="veth", state="up", peer=peer,
                         index=self._new_index(v.netns, v.name), **kw)
            finally:
                os.close(fd)
            self._up(v.peer_netns, v.peer_name)
            if i % 20 == 0:
                self.progress("links", i + 1, len(state.veths))
        self.progress("links", len(state.veths), len(state.veths))

    def _addresses_routes(self, state: DesiredState) -> None:
        for a in state.addresses:
            ip, plen = a.cidr.split("/")
            ipr = self.sockets[a.netns]
            ipr.addr("add", index=self._index(a.netns, a.ifname), address=ip, prefixlen=int(plen))
        for n in state.neighbours:
            self.sockets[n.netns].neigh("add", dst=n.ip, lladdr=n.mac, state=NUD_PERMANENT,
                                        ifindex=self._index(n.netns, n.ifname))
        for r in state.routes:
            kw: dict = {"dst": "0.0.0.0/0" if r.dst == "default" else r.dst}
            if r.dev:
                kw["oif"] = self._index(r.netns, r.dev)
            if r.via:
                kw["gateway"] = r.via
            if r.onlink:
                kw["flags"] = RTNH_F_ONLINK
            if r.table:
                kw["table"] = r.table
            if r.type != "unicast":
                kw["type"] = r.type
            if r.type == "local":
                kw["scope"] = "host"  # the kernel refuses a local route of universe scope
            self.sockets[r.netns].route("add", **kw)
        for rule in state.ip_rules:
            self.sockets[rule.netns].rule("add", fwmark=rule.fwmark, fwmask=rule.mask,
                                          table=rule.table, priority=rule.priority)
        self.progress("addresses and routes", 1, 1)

    def _sysctls(self, state: DesiredState) -> None:
        self.checkpoint()
        for s in state.sysctls:
            # /proc/sys/net follows the namespace of the thread that opens the file.
            with nsmod.entered(s.netns):
                with open("/proc/sys/" + s.key.replace(".", "/"), "w") as f:
                    f.write(s.value)

    def _ipsets(self, state: DesiredState) -> None:
        for s in state.ipsets:
            self.checkpoint()
            lines = [f"create {s.name} {s.type} -exist"] + [f"add {s.name} {m} -exist" for m in s.members]
            self._run_in(s.netns, ["ipset", "restore"], "\n".join(lines) + "\n")

    def _start_rulesets(self, state: DesiredState) -> None:
        """Start every iptables-restore on worker threads; `_rulesets` waits for them."""
        if not state.rulesets:
            return
        self._rules_pool = ThreadPoolExecutor(RULESET_WORKERS, thread_name_prefix="iptables-restore")
        self._rules = [self._rules_pool.submit(self._run_in, rs.netns, ["iptables-restore", "--noflush"],
                                               rs.text) for rs in state.rulesets]

    def _rulesets(self, state: DesiredState) -> None:
        """Every ruleset in place (or the first failure raised), and the workers gone, so
        no thread runs while processes are forked."""
        for i, done in enumerate(self._rules):
            self.checkpoint()
            done.result()
            self.progress("iptables", i + 1, len(self._rules))
        self._stop_rulesets()

    def _stop_rulesets(self) -> None:
        if self._rules_pool is not None:
            self._rules_pool.shutdown(wait=True, cancel_futures=True)
            self._rules_pool = None

    def _processes(self, state: DesiredState, timeout: float) -> None:
        logs = os.path.join(self.record.dir, "logs")
        os.makedirs(logs, exist_ok=True)
        starts = [self._prepare(spec, logs) for spec in state.processes]
        try:
            for i in range(0, len(starts), zygote.BATCH):
                self.checkpoint()
                # Ready pipes per batch: only a batch's write ends are open at once.
                batch = [self._with_ready_pipe(spec, start) for spec, start
                         in zip(state.processes[i:i + zygote.BATCH], starts[i:i + zygote.BATCH])]
                # Forked from the zygote in one request where it can run them (kernel/zygote.py).
                self.record.processes += zygote.spawn_many(batch)
                self.progress("processes", len(self.record.processes), len(starts))
        finally:
            # One journal write for the phase: a process started before it and not yet
            # recorded lives in a lab namespace, where teardown finds it (destroy).
            self.record.save()
        self.progress("processes", len(state.processes), len(state.processes))
        total = len(state.processes)
        for i, (spec, rec) in enumerate(zip(state.processes, self.record.processes)):
            # Named, so a slow one shows (a lab's Prometheus takes ~6 s: docs/prometheus.md).
            self.progress(f"ready: {spec.name}", i, total)
            pipe = self._ready.pop(spec.name, None)
            if pipe is not None:
                wait_signalled(pipe, rec, timeout, self.guard)
            for check in spec.ready:
                wait_ready(check, rec.pid, rec.log, timeout, self.checkpoint)
        self.progress("ready", total, total)

    def _prepare(self, spec: ProcessSpec, logs: str) -> zygote.Start:
        """Its files written and its restart spec noted: what starting one process
        needs, short of its ready pipe and the start."""
        safe = spec.name.replace("/", "_")
        argv = list(spec.argv)
        if spec.config is not None:
            cfg = os.path.join(self.record.dir, f"{safe}.json")
            with open(cfg, "w") as f:
                f.write(spec.config)
            argv = [cfg if a == "{config}" else a for a in argv]
        resolv = None
        if spec.resolv_conf:
            resolv = os.path.join(self.record.dir, f"{safe}.resolv.conf")
            with open(resolv, "w") as f:
                f.write(spec.resolv_conf)
        restart = processes.RestartSpec(spec.name, spec.netns, tuple(argv), os.path.join(logs, f"{safe}.log"),
                                        resolv, dict(spec.env), spec.uid, spec.gid, spec.signals_ready,
                                        spec.ready)
        self._restart.append(restart)
        return zygote.Start(spec.name, spec.netns, argv, restart.log, resolv, restart.env,
                            spec.uid, spec.gid)

    def _with_ready_pipe(self, spec: ProcessSpec, start: zygote.Start) -> zygote.Start:
        if not spec.signals_ready:
            return start
        pipe = self._ready[spec.name] = ReadyPipe()
        return dataclasses.replace(start, ready=pipe)

    @staticmethod
    def _warm_zygote(state: DesiredState) -> None:
        """Have the pre-imported interpreters (kernel/zygote.py) import what this lab's
        processes run, while the namespaces, links and rules are being made."""
        modules = sorted({zygote.module_of(p.argv) for p in state.processes if zygote.eligible(p.argv)})
        if modules:
            zygote.warm(modules + ["netlab.kernel.supervisor"])  # the supervisor too: it starts last

    def _start(self, name: str, netns: str, argv: Sequence[str], log: str, resolv: str | None = None,
               env: dict[str, str] | None = None, uid: int = 0, gid: int = 0,
               ready: ReadyPipe | None = None) -> ProcessRecord:
        """Fork from the zygote what it can run; start anything else as a fresh process."""
        return zygote.spawn(name, netns, argv, log, resolv, env=env, uid=uid, gid=gid, ready=ready)

    def _supervisor(self, state: DesiredState, timeout: float) -> None:
        """Last step: the kubelet stand-in that restarts what dies (kernel/supervisor.py)."""
        if not self._restart:
            return
        self.checkpoint()
        processes.write_specs(self.record.lab, self._restart)
        fabric = next(n.name for n in state.netns if n.role == "fabric")
        log = os.path.join(self.record.dir, "logs", f"{SUPERVISOR}.log")
        with ReadyPipe() as pipe:
            rec = self._start(SUPERVISOR, fabric, [sys.executable, "-m", "netlab.kernel.supervisor",
                                                   self.record.lab], log, ready=pipe)
            self.record.processes.append(rec)
            self.record.save()
            wait_signalled(pipe, rec, timeout, self.guard)
        self.progress("supervisor", 1, 1)

    # -- helpers ------------------------------------------------------------------------
    def _index(self, netns: str, ifname: str) -> int:
        # One RTM_GETLINK by name, cached: pyroute2's link_lookup dumps every link in
        # the namespace, which made a 50-pod node cost O(n^2) netlink traffic.
        key = (netns, ifname)
        if key not in self._ifindex:
            try:
                self._ifindex[key] = self.sockets[netns].link("get", ifname=ifname)[0]["index"]
            except NetlinkError as e:
                raise KernelError(f"no interface {ifname} in {netns}") from e
        return self._ifindex[key]

    def _new_index(self, netns: str, ifname: str) -> int:
        """The ifindex the link about to be made in `netns` gets (and is then known by).

        The namespaces are the lab's own and fresh, and only this applier makes links in
        them, so counting up from the highest index there never meets one in use. That
        is asked once per namespace: a fresh one has `lo` at 1, and also the fallback
        tunnels (tunl0, sit0, ...) when their modules are loaded on the host."""
        key = (netns, ifname)
        if key not in self._ifindex:
            if netns not in self._next_index:
                self._next_index[netns] = max(link["index"] for link in self.sockets[netns].get_links()) + 1
            self._ifindex[key] = self._next_index[netns]
            self._next_index[netns] += 1
        return self._ifindex[key]

    def _up(self, netns: str, ifname: str) -> None:
        self.sockets[netns].link("set", index=self._index(netns, ifname), state="up")

    @staticmethod
    def _run_in(netns: str, argv: list[str], stdin: str) -> None:
        res = run_netns_only(netns, argv, stdin)
        if res.returncode != 0:
            raise KernelError(f"{' '.join(argv)} failed in {netns}: {res.stderr.strip()}")


def run_netns_only(netns: str, argv: list[str], stdin: str | None = None,
                   timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a tool in a namespace's network stack only (no mount namespace needed).

    Started from this thread while it is inside the namespace: the child inherits the
    thread's namespace, and with no Python to run between fork and exec, subprocess
    uses vfork (2.4 ms per iptables-restore here, against 5.7 ms with a preexec_fn)."""
    with nsmod.entered(netns):
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)


def wait_signalled(pipe: ReadyPipe, rec: ProcessRecord, timeout: float,
                   guard: Guard | None = None) -> None:
    """Wait for a process' "ready" on its ready pipe; an early exit fails at once, with its log.

    With a guard, a signal ends the wait at once (Interrupted)."""
    try:
        if guard is not None:
            pipe.wait(timeout, wake_fd=guard.fd, on_wake=guard.check)
        else:
            pipe.wait(timeout)
    except NotReady as e:
        if e.exited:
            raise KernelError(f"process {rec.name} (pid {rec.pid}) {e}; its log ({rec.log}) "
                              f"ends:\n{_tail(rec.log)}") from None
        raise KernelError(f"process {rec.name} (pid {rec.pid}) did not say it was ready after "
                          f"{timeout:g}s; see {rec.log}") from None


def listening(check: ReadyCheck) -> bool:
    """Is something bound to the port in that namespace? Read the kernel's socket tables.

    Both families: a dual-stack server (iperf3, many Go and C servers) binds `::` and
    shows up only in tcp6.
    """
    tables = ("tcp", "tcp6") if check.proto == "tcp" else ("udp", "udp6")
    lines: list[str] = []
    with nsmod.entered(check.netns):
        for table in tables:
            try:
                with open(f"/proc/thread-self/net/{table}") as f:
                    lines += f.readlines()[1:]
            except FileNotFoundError:  # IPv6 disabled
                pass
    for line in lines:
        fields = line.split()
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if port == check.port and (check.proto == "udp" or fields[3] == "0A"):
            return True
    return False


def wait_ready(check: ReadyCheck, pid: int, log: str, timeout: float,
               checkpoint: Callable[[], None] = lambda: None) -> None:
    """Poll for a listener: for foreign commands only, which cannot use the ready pipe."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not listening(check):
        checkpoint()
        if not processes.pid_alive(pid):
            raise KernelError(f"process {pid} exited before listening on {check.proto}/{check.port} "
                              f"in {check.netns}; its log ({log}) ends:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise KernelError(f"nothing listens on {check.proto}/{check.port} in {check.netns} "
                              f"after {timeout:.0f}s; see {log}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _tail(path: str, n: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def destroy(record: LabRecord) -> None:
    """Remove exactly what the record names: its processes, its namespaces, its state."""
    record.status = "destroying"
    record.builder_pid = os.getpid()  # who works on it now: if this dies, the lab is crashed
    try:
        record.save()
    except OSError:
        pass
    # The supervisor first, and wait for it: otherwise it would restart what is being stopped.
    supervisor = [p.pid for p in record.processes if p.name == SUPERVISOR and processes.is_ours(p)]
    if supervisor:
        processes.stop(supervisor)
        fresh = LabRecord.load(record.lab)  # its last word: pids it started since `up`
        if fresh is not None:
            record.processes = fresh.processes
    pids = {p.pid for p in record.processes if processes.is_ours(p)}
    # Anything else still living in a lab namespace (a `netlab exec` shell, a child the
    # lab's processes forked) holds that namespace open: it is the lab's too.
    pids |= set(nsmod.pids_in(record.netns))
    pids.discard(os.getpid())
    processes.stop(sorted(pids))
    for name in reversed(record.netns):
        nsmod.delete(name)
    record.remove()
