"""The proxies' warm-up, run by their zygote before it forks one (proxy/config.py).

`snapshot.prime` is judged by the decoder itself: after it, decoding a planned sidecar's
snapshot adds no class to the shape cache, so no forked proxy works one out on its own
pages. The TLS rehearsal must complete a real mutual handshake (each end checks the
other's certificate) and leave nothing on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_the_tls_rehearsal_completes_a_mutual_handshake_and_leaves_no_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config.rehearse_tls()  # raises IdentityError if either end saw no certificate
    assert list(tmp_path.iterdir()) == []
