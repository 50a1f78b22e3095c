"""Netfilter trace collector: which iptables rule saw a packet, and its verdict.

Kernel-log LOG/TRACE are silent outside the initial netns (mesh-facts §11); the
nf_tables trace is per netns. With iptables-nft, `-j TRACE` in the raw table becomes
`meta nftrace set 1`, and `xtables-monitor --trace` prints each traced rule back in
iptables syntax (`-A INPUT -p tcp ... -j DROP`), the same language the lab wrote, so
it is preferred over `nft monitor trace`.

Our trace rules carry a comment with a per-run id; stop() deletes exactly those rules
and checks iptables-save afterwards. If the raw table did not exist before, and is
empty again, it is deleted too, so the netns is left as found. The trace's own rules
(and the raw chains' verdicts in a netns whose raw table exists only for the trace)
are never emitted: they are how netlab looks, not what the lab does.

When: a trace message carries no time, and xtables-monitor's line is read up to ~20 ms
after the packet. `ts_ns` is that read time (`extra.ts_from` = `read`, kept as
`extra.read_ns`); netlab.observe.order moves each event next to the packet it belongs
to, found by the IP identification and tuple (`extra.ip_id`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from typing import Any

from netlab.observe.collector import Capability, Collector, Scope, Sink
from netlab.observe.events import Event

NETLINK_NETFILTER = 12
NFNLGRP_NFTRACE_BIT = 1 << (9 - 1)
_FLAG_LETTERS = {"SYN": "S", "FIN": "F", "RST": "R", "PSH": "P", "URG": "U", "ACK": "A"}
_KV = re.compile(r"(\w+)=(\S+)")


def _ns(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def _run(netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_ns(netns, *argv), capture_output=True, text=True, check=check)


def trace_specs(scope: Scope) -> list[list[str]]:
    """Match parts for the trace rules: both directions of the scoped traffic."""
    specs: list[list[str]] = []
    if scope.port:
        for proto in ("tcp", "udp"):
            specs += [["-p", proto, "--dport", str(scope.port)],
                      ["-p", proto, "--sport", str(scope.port)]]
    if scope.address:
        addr = [["-d", scope.address], ["-s", scope.address]]
        specs = [s + a for s in specs for a in addr] if specs else addr
    return specs or [[]]


def parse_line(line: str) -> dict[str, Any] | None:
    """One xtables-monitor --trace line -> dict (packet or trace), None if neither."""
    line = line.strip()
    if line.startswith("PACKET:"):
        parts = line.split(None, 3)
        if len(parts) < 3:
            return None
        rest = parts[3] if len(parts) > 3 else ""
        fields = dict(_KV.findall(rest))
        flags = "".join(_FLAG_LETTERS[t] for t in rest.split() if t in _FLAG_LETTERS)
        order = "SFRPUA"
        flags = "".join(sorted(flags, key=order.index))
        return {"type": "packet", "id": parts[2], "fields": fields, "flags": flags}
    if line.startswith("TRACE:"):
        parts = line.split(None, 4)
        if len(parts) < 4:
            return None
        where = parts[3].split(":")
        rule = parts[4].strip() if len(parts) > 4 else ""
        out: dict[str, Any] = {"type": "trace", "id": parts[2], "table": where[0],
                               "chain": where[1] if len(where) > 1 else "",
                               "what": where[2] if len(where) > 2 else ""}
        if out["what"] == "rule" and len(where) > 4:
            out["handle"] = where[3]
            out["verdict"] = where[4]
        else:
            out["verdict"] = where[-1] if len(where) > 3 else ""
        if rule:
            out["rule"] = re.sub(r"^-4 |^-6 ", "", rule)
        return out
    return None


def joined_group(pid: int, group_bit: int, protocol: int = NETLINK_NETFILTER) -> bool:
    """Has one of `pid`'s netlink sockets joined the group yet?

    Matched by socket inode (/proc/PID/fd -> /proc/PID/net/netlink), not by port id:
    tools such as conntrack open a second socket whose port id is not their pid.
    """
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
        with open(f"/proc/{pid}/net/netlink") as f:
            next(f)
            for row in f:
                cols = row.split()
                if (int(cols[1]) == protocol and int(cols[9]) in inodes
                        and int(cols[3], 16) & group_bit):
                    return True
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return False


class NftraceCollector(Collector):
    name = "nftrace"

    def __init__(self) -> None:
        self._tag = f"netlab-trace-{uuid.uuid4().hex[:8]}"
        self._added: list[tuple[str, list[str]]] = []  # (netns, iptables argv after -t raw -I)
        self._created_raw: set[str] = set()
        self._procs: list[tuple[subprocess.Popen[str], str, int]] = []
        self._threads: list[threading.Thread] = []
        self._counters = {"events": 0, "lost": 0, "rules_added": 0, "rules_removed": 0}
        self._packets: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._counters["hidden"] = 0  # events of the trace's own rules, not emitted

    def can_run(self) -> Capability:
        if os.geteuid() != 0:
            return Capability(False, "needs root to add raw-table TRACE rules")
        for tool in ("iptables", "xtables-monitor", "ip"):
            if not shutil.which(tool):
                return Capability(False, f"{tool} not found on PATH")
        ver = subprocess.run(["iptables", "--version"], capture_output=True, text=True)
        if "nf_tables" not in ver.stdout:
            return Capability(False, "iptables is not the nf_tables backend "
                              f"({ver.stdout.strip()}): TRACE would go to the kernel log, "
                              "which is silent outside the initial netns")
        return Capability(True, "iptables-nft raw TRACE (meta nftrace) + "
                          "xtables-monitor --trace per netns")

    def start(self, scope: Scope, sink: Sink) -> None:
        self._sink = sink
        self._inodes = dict(scope.netns)
        for name in scope.netns:
            # Monitor first, so the first traced packet is not missed.
            proc = subprocess.Popen(_ns(name, "stdbuf", "-oL", "xtables-monitor", "--trace"),
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, bufsize=1)
            self._procs.append((proc, name, scope.netns[name]))
            t = threading.Thread(target=self._read, args=(proc, name), daemon=True,
                                 name=f"netlab-nftrace-{name}")
            t.start()
            self._threads.append(t)
        for proc, name, _ in self._procs:
            deadline = time.monotonic() + 5
            while not joined_group(proc.pid, NFNLGRP_NFTRACE_BIT) and time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"xtables-monitor exited in {name}")
                time.sleep(0.01)
        for name in scope.netns:
            if _run(name, "nft", "list", "table", "ip", "raw", check=False).returncode != 0:
                self._created_raw.add(name)
            for chain in ("PREROUTING", "OUTPUT"):
                for spec in trace_specs(scope):
                    rule = [chain, *spec, "-m", "comment", "--comment", self._tag,
                            "-j", "TRACE"]
                    _run(name, "iptables", "-w", "-t", "raw", "-I", rule[0], "1", *rule[1:])
                    self._added.append((name, rule))
                    self._counters["rules_added"] += 1

    def _read(self, proc: subprocess.Popen[str], name: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            rec = parse_line(line)
            if rec is None:
                continue
            now = time.monotonic_ns()
            with self._lock:
                if rec["type"] == "packet":
                    self._packets[(name, rec["id"])] = rec
                    continue
                pkt = self._packets.get((name, rec["id"]), {})
                self._emit(rec, pkt, name, now)

    def own(self, rec: dict[str, Any], name: str) -> bool:
        """Is this trace line about netlab's own tracing: its TRACE rule, or a chain
        of a raw table that exists only because the trace made it?"""
        if self._tag in (rec.get("rule") or ""):
            return True
        return rec.get("table") == "raw" and name in self._created_raw

    def _emit(self, rec: dict[str, Any], pkt: dict[str, Any], name: str, now: int) -> None:
        if self.own(rec, name):
            self._counters["hidden"] += 1
            return
        f = pkt.get("fields", {})
        kind = "nf_rule" if rec["what"] == "rule" else "nf_verdict"
        extra = {k: rec[k] for k in ("table", "chain", "verdict", "rule", "handle") if k in rec}
        extra["trace_id"] = rec["id"]
        extra["hook_type"] = rec["what"]  # rule / policy / return
        extra["ts_from"], extra["read_ns"] = "read", now
        for key, field_name in (("ip_id", "ID"), ("len", "LEN")):
            if f.get(field_name, "").isdigit():
                extra[key] = int(f[field_name])
        for key in ("IN", "OUT"):
            if key in f:
                extra[key.lower()] = f[key]
        proto = f.get("PROTO", "").lower() or None
        if proto is None and "SPORT" in f:
            proto = "tcp" if pkt.get("flags") else "udp"
        ev = Event(ts_ns=now, source="nftrace", kind=kind, netns_inode=self._inodes[name],
                   netns=name, ifname=f.get("IN") or f.get("OUT"), proto=proto,
                   saddr=f.get("SRC"), daddr=f.get("DST"),
                   sport=int(f["SPORT"]) if "SPORT" in f else None,
                   dport=int(f["DPORT"]) if "DPORT" in f else None,
                   tcp_flags=pkt.get("flags") or None,
                   mark=int(f["MARK"], 16) if "MARK" in f else None, extra=extra)
        self._counters["events"] += 1
        self._sink(ev)

    def leftover_rules(self, name: str) -> list[str]:
        """Rules carrying this run's tag still present in `name` (should be none)."""
        out = _run(name, "iptables-save", "-t", "raw", check=False).stdout
        return [line for line in out.splitlines() if self._tag in line]

    def stop(self) -> dict[str, int]:
        for name, rule in self._added:
            res = _run(name, "iptables", "-w", "-t", "raw", "-D", *rule, check=False)
            if res.returncode == 0:
                self._counters["rules_removed"] += 1
        names = {n for n, _ in self._added}
        self._added = []
        leftovers = sum(len(self.leftover_rules(n)) for n in names)
        self._counters["rules_left"] = leftovers
        for name in self._created_raw & names:
            rules = _run(name, "iptables-save", "-t", "raw", check=False).stdout
            if not any(line.startswith("-A ") for line in rules.splitlines()):
                _run(name, "nft", "delete", "table", "ip", "raw", check=False)
        time.sleep(0.05)  # let the monitor print traces already queued in its socket
        for proc, _, _ in self._procs:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for t in self._threads:
            t.join(timeout=2)
        self._procs, self._threads = [], []
        if leftovers:
            raise RuntimeError(f"nftrace: {leftovers} trace rules tagged {self._tag} remain")
        return dict(self._counters)
