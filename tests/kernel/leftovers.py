"""What a lab owned while it existed, and what of it is still on the machine afterwards.

Why not `pgrep -f nl-<lab>-`: no netlab process has the netns name on its command line,
so that check passed whatever was left running. These checks use what is real:

- the pids the lab's state file recorded (with their start time, so a reused pid is not
  taken for a leftover);
- the network namespaces the lab made, by inode: a process still inside one keeps it
  alive after its /run/netns pin is gone, and /proc/<pid>/ns/net shows the same inode;
- any process holding a file under the lab's state directory open (every process the
  lab starts writes its log there), which needs no snapshot taken in advance.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

NETNS_DIR = Path("/run/netns")
STATE_ROOT = Path("/run/netlab")

Inode = tuple[int, int]  # (st_dev, st_ino) of an nsfs file


@dataclass(frozen=True)
class Owned:
    """A snapshot taken while the lab exists (built, or still building)."""

    lab: str
    netns: dict[Inode, str] = field(default_factory=dict)  # inode -> netns name
    processes: dict[int, int] = field(default_factory=dict)  # pid -> start time


def _inode(path: str | Path) -> Inode | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _starttime(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def owned(lab: str) -> Owned:
    """Read the lab's state file now: its namespaces (by inode) and its recorded pids."""
    state = json.loads((STATE_ROOT / lab / "state.json").read_text())
    netns = {ino: name for name in state["netns"] if (ino := _inode(NETNS_DIR / name))}
    procs = {p["pid"]: p["starttime"] for p in state["processes"]}
    return Owned(lab, netns, procs)


def _pinned_netns() -> dict[Inode, str]:
    """Every namespace pinned under /run/netns now, inode -> name."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return {}
    return {ino: name for name in names if (ino := _inode(NETNS_DIR / name))}


def _holds_lab_file(pid: str, lab_dir: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(lab_dir):
                return True
        except OSError:
            continue
    return False


def _describe(pid: int, why: str) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmd = "?"
    return f"pid {pid} ({why}): {cmd.strip()}"


def processes_left(lab: str, snapshot: Owned | None = None) -> list[str]:
    """Processes of `lab` still running, each described with why it counts as the lab's."""
    left: dict[int, str] = {}
    me = os.getpid()
    if snapshot is not None:
        for pid, start in snapshot.processes.items():
            if _starttime(pid) == start:
                left[pid] = "recorded in the lab's state file"
    # An inode the kernel freed may be reused by a namespace made since (another lab's):
    # one pinned now under a name that is not this lab's is not a leftover.
    pinned = _pinned_netns()
    prefix = f"nl-{lab}-"
    ours = {ino: name for ino, name in (snapshot.netns if snapshot else {}).items()
            if pinned.get(ino, name).startswith(prefix)}
    lab_dir = f"{STATE_ROOT / lab}/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me or int(entry) in left:
            continue
        ino = _inode(f"/proc/{entry}/ns/net")
        if ino in ours and _starttime(int(entry)) is not None:
            left[int(entry)] = f"inside {ours[ino]}"
        elif _holds_lab_file(entry, lab_dir):
            left[int(entry)] = f"holds a file under {lab_dir}"
    return [_describe(pid, why) for pid, why in sorted(left.items())]


def netns_left(lab: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"nl-{lab}-")]


def leftovers(lab: str, snapshot: Owned | None = None) -> list[str]:
    """Everything of `lab` still on the machine, in words; empty when teardown was complete."""
    found = [f"netns {n}" for n in netns_left(lab)]
    if (STATE_ROOT / lab).exists():
        found.append(f"state directory {STATE_ROOT / lab}")
    return found + processes_left(lab, snapshot)
