"""The applier gives each link it makes an ifindex of its own choosing (kernel/apply.py).

A fresh namespace holds `lo` at 1, and on a host with the ipip/sit/gre modules loaded
also their fallback devices (tunl0, sit0, ...) right after it: the chosen indexes must
start above whatever the kernel put there, or the create fails with EBUSY."""

from __future__ import annotations

from typing import Any

from netlab.kernel.apply import Applier


class FakeRtnl:
    def __init__(self, indexes: list[int]) -> None:
        self.indexes = indexes
        self.dumps = 0

    def get_links(self) -> list[dict[str, Any]]:
        self.dumps += 1
        return [{"index": i} for i in self.indexes]


def _applier(**namespaces: FakeRtnl) -> Applier:
    applier = Applier(record=None)  # type: ignore[arg-type]  # _new_index never journals
    applier.sockets = namespaces  # type: ignore[assignment]
    return applier


def test_indexes_start_above_what_the_kernel_made_and_are_asked_for_once() -> None:
    plain, tunnels = FakeRtnl([1]), FakeRtnl([1, 2, 3, 4])  # lo; lo, tunl0, gre0, sit0
    a = _applier(pod=plain, node=tunnels)
    assert [a._new_index("pod", "eth0"), a._new_index("node", "br0"), a._new_index("node", "veth1")] == [2, 5, 6]
    assert a._new_index("node", "br0") == 5  # the same link keeps its index
    assert plain.dumps == tunnels.dumps == 1
