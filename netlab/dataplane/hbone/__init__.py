"""HBONE: TCP tunnelled as HTTP/2 CONNECT streams over mutual TLS (mesh-facts §3, §4).

One `H2Conn` (an asyncio Protocol) carries one TLS+h2 connection for either
side; each proxied TCP connection is one `HboneStream` on it. Why a Protocol and
not StreamReader/Writer: h2 is event driven, so feeding it straight from
`data_received` avoids a reader task per connection and a copy per read.

Flow control: received DATA is acknowledged when the *application* reads it, so a
slow consumer throttles the sender through h2 windows instead of buffering without
bound. Windows and frames are ztunnel's defaults (4 MiB per stream, 16 MiB per
connection, 1 MiB frames), so bulk transfers are not limited by round trips or by
per-frame work. The pool releases connections unused for 5 minutes, as ztunnel does.

Where this differs from ztunnel: no connection draining in the pool,
no PROXY-protocol or double-HBONE, and the pool key also includes the destination
port (always 15008 in a lab; it keeps loopback tests with ephemeral ports apart).
"""

from netlab.dataplane.hbone.conn import H2Conn
from netlab.dataplane.hbone.pool import HbonePool
from netlab.dataplane.hbone.server import HboneServer
from netlab.dataplane.hbone.stream import HboneStream, relay
from netlab.dataplane.hbone.wire import (CONN_WINDOW, MAX_FRAME, RELAY_CHUNK, STREAM_WINDOW, HboneError,
                                         make_headers, parse_authority)

__all__ = ["CONN_WINDOW", "MAX_FRAME", "RELAY_CHUNK", "STREAM_WINDOW", "H2Conn", "HboneError", "HbonePool",
           "HboneServer", "HboneStream", "make_headers", "parse_authority", "relay"]
