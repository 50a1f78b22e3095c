"""netlab: a packet-level emulator of the service-mesh dataplane on Linux namespaces."""

__version__ = "0.1.0"
