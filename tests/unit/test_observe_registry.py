"""One collector registry: the Tracer and `netlab doctor` see the same collectors,
found by name in netlab/observe/registry.py and nowhere else."""

from __future__ import annotations

import pytest

from netlab.observe import registry
from netlab.observe.collector import Capability, Collector, Scope, Sink
from netlab.observe.doctor import doctor
from netlab.observe.tracer import Tracer, TracerError


class FakeCollector(Collector):
    """Registers like a real one; needs no kernel."""

    name = "fake"
    started: list["FakeCollector"] = []

    def can_run(self) -> Capability:
        return Capability(True, "nothing")

    def start(self, scope: Scope, sink: Sink) -> None:
        FakeCollector.started.append(self)

    def stop(self) -> dict[str, int]:
        return {"events": 0}


class BrokenProbe(FakeCollector):
    name = "broken"

    def can_run(self) -> Capability:
        raise RuntimeError("boom")


@pytest.fixture
def only_fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "FACTORIES", {"fake": FakeCollector, "broken": BrokenProbe})
    FakeCollector.started = []


def test_default_registry_lists_the_three_collectors() -> None:
    assert registry.names() == ("bpf", "conntrack", "nftrace")


def test_doctor_and_tracer_see_the_registry(only_fakes: None) -> None:
    """A collector added to the registry alone shows up in doctor and in a default
    Tracer, in registry order: nothing else keeps a list of its own."""
    rows = doctor()
    assert [name for name, _ in rows] == ["fake", "broken", "pcap"]
    assert dict(rows)["broken"] == Capability(False, "probe failed: boom")
    assert Tracer({}).collector_names == registry.names() == ("fake", "broken")
    with Tracer({}, collectors=("fake",)) as t:
        assert [type(c) for c in FakeCollector.started] == [FakeCollector]
        assert t.events == []  # Collector.flush() default: nothing held back
    assert t.counters == {"fake": {"events": 0}}


def test_unknown_collector_is_named(only_fakes: None) -> None:
    with pytest.raises(registry.UnknownCollector, match="known: fake, broken"):
        registry.create("bfp")
    assert registry.probe("bfp").ok is False
    with pytest.raises(TracerError, match="unknown collector 'bfp'"):
        Tracer({}, collectors=("bfp",)).start()


def test_factories_import_lazily() -> None:
    """Looking names up must not import a collector's module (bcc, pyroute2...)."""
    import subprocess
    import sys

    code = ("import sys; from netlab.observe import registry; registry.names(); "
            "print([m for m in sys.modules if m.startswith('netlab.observe.bpf') "
            "or m == 'bcc'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
