"""snapshot.prime: the zygote works out every class a proxy's snapshot decodes, up front.

Judged by the decoder itself: after `prime`, decoding a planned sidecar's snapshot adds
no class to the shape cache, so no forked proxy works one out on its own pages.
"""

from __future__ import annotations

from netlab import snapshot, xds
from netlab.dataplane.proxy import config
from tests.unit.test_proxy_config import _snap


def test_prime_leaves_nothing_for_a_real_snapshot_to_work_out() -> None:
    text = snapshot.to_json(_snap())
    snapshot._shape.cache_clear()
    n = snapshot.prime(xds.SidecarSnapshot)
    assert n == snapshot._shape.cache_info().currsize > 10
    decoded = snapshot.from_json(xds.SidecarSnapshot, text)
    assert snapshot._shape.cache_info().currsize == n  # nothing new to work out
    assert decoded == _snap()


def test_without_prime_the_decoder_works_shapes_out_as_it_goes() -> None:
    text = snapshot.to_json(_snap())
    snapshot._shape.cache_clear()
    snapshot.from_json(xds.SidecarSnapshot, text)
    assert snapshot._shape.cache_info().currsize > 0


def test_the_proxies_warm_up_primes_both_snapshot_kinds() -> None:
    snapshot._shape.cache_clear()
    config.warm()
    misses = snapshot._shape.cache_info().misses
    assert misses > 0
    snapshot.prime(snapshot.ProxySnapshot)
    snapshot.prime(xds.SidecarSnapshot)
    assert snapshot._shape.cache_info().misses == misses  # both were worked out already
