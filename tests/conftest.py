"""Shared fixtures. Kernel tests each get their own lab name, and always tear down."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import pytest

from netlab.model import Lab

REPO = Path(__file__).resolve().parents[1]
NETLAB = str(Path(sys.executable).parent / "netlab")
_counter = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kernel test: needs root (`sudo make test` runs it)")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab_name(request: pytest.FixtureRequest) -> str:
    """Unique per test and per run, short enough for netns names, so tests never collide."""
    return f"t{os.getpid() % 1000}x{next(_counter)}"


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a helper process a test started: SIGTERM, then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_cli(*args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    res = subprocess.run([NETLAB, *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"netlab {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture
def up_lab(lab_name: str) -> Iterator[Callable[..., str]]:
    """up_lab(file, name=None) builds a lab through the CLI; teardown always removes it."""
    built: list[str] = []

    def build(file: str | Path, name: str | None = None) -> str:
        name = name or lab_name
        built.append(name)
        run_cli("up", str(file), "--name", name, check=True)
        return name

    yield build
    for name in built:
        if os.path.isdir(f"/run/netlab/{name}"):
            run_cli("down", name)


@pytest.fixture
def build_lab(lab_name: str) -> Iterator[Callable[..., str]]:
    """build_lab(lab, name=None) builds a model.Lab with `lifecycle.up`, the API labs and
    benches use, under this test's unique name; teardown always removes it.

    For tests that vary a lab (load a base file, `dataclasses.replace` what differs);
    tests of the command line itself build through `up_lab` instead.
    """
    from netlab.kernel import lifecycle

    built: list[str] = []

    def build(lab: Lab, name: str | None = None) -> str:
        name = name or lab_name
        built.append(name)
        lifecycle.up(replace(lab, name=name))
        return name

    yield build
    for name in built:
        if os.path.isdir(f"/run/netlab/{name}"):
            lifecycle.down(name)
