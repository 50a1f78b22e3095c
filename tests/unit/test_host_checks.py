"""`netlab doctor`'s host rows: advice true for the user who runs it, headers rated by what
netlab takes from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netlab.observe import host_checks
from netlab.observe.bpf import tracefs

MOUNTINFO = """\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
42 23 0:13 / /sys/kernel/tracing rw,relatime shared:12 - tracefs nodev rw
"""


def test_a_mounted_tracefs_is_found_in_the_mount_table(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert host_checks.mount_listed("/sys/kernel/tracing", "tracefs", str(info))
    assert not host_checks.mount_listed("/sys/kernel/debug", "debugfs", str(info))
    assert not host_checks.mount_listed("/sys", "tracefs", str(info))


def test_non_root_is_not_told_to_mount_a_mounted_tracefs(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a non-root user sees: the directory is mode 0700, so its events/ is invisible.
    monkeypatch.setattr(tracefs, "mounted", lambda path=tracefs.TRACEFS: False)
    monkeypatch.setattr(host_checks, "mount_listed", lambda path, fstype, mountinfo="": True)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    check = host_checks._tracefs()
    assert not check.ok
    assert "mount -t" not in check.detail and "is mounted" in check.detail and "sudo" in check.detail


def _headers(tmp_path: Path, release: str) -> Path:
    inc = tmp_path / "build" / "include" / "generated"
    inc.mkdir(parents=True)
    (inc / "utsrelease.h").write_text(f'#define UTS_RELEASE "{release}"\n')
    return tmp_path / "build"


def test_headers_of_another_kernel_are_named_and_rated_by_btf(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    build = _headers(tmp_path, "6.1.0-57-amd64")
    assert host_checks.headers_release(str(build)) == "6.1.0-57-amd64"
    monkeypatch.setattr(host_checks, "headers_release", lambda b: "6.1.0-57-amd64")
    uname = os.uname()
    monkeypatch.setattr(host_checks.os, "uname", lambda: type(uname)(
        (uname.sysname, uname.nodename, "6.18.44-test", uname.version, uname.machine)))
    monkeypatch.setattr(host_checks.os.path, "isdir", lambda p: True)
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"")
    monkeypatch.setattr(host_checks, "BTF_PATH", str(btf))
    with_btf = host_checks._kernel_headers()
    assert with_btf.ok
    assert "6.1.0-57-amd64" in with_btf.detail and "6.18.44-test" in with_btf.detail and "BTF" in with_btf.detail
    monkeypatch.setattr(host_checks, "BTF_PATH", str(tmp_path / "absent"))
    without = host_checks._kernel_headers()
    assert not without.ok and "linux-headers-6.18.44-test" in without.detail
    monkeypatch.setattr(host_checks, "headers_release", lambda b: "6.18.44-test")
    same = host_checks._kernel_headers()
    assert same.ok and "same as the running kernel" in same.detail
