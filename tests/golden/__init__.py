"""Vendored reference data the tests compare netlab against (see each folder's README)."""

from pathlib import Path

ISTIO = Path(__file__).resolve().parent / "istio"
