"""Consumer side of a BPF ring buffer map, read through mmap without bcc.

Why not bcc's ring_buffer_poll: it calls back into Python once per record, which at
thousands of connections/s costs more than the traffic being traced. Here a drain
thread copies committed records out in chunks and decoding happens later, off the
packet path (see decode.py).
"""

from __future__ import annotations

import mmap
import struct
from collections import deque
from typing import Iterator

_U64 = struct.Struct("<Q")
RB_BUSY, RB_DISCARD, RB_HDR = 1 << 31, 1 << 30, 8


def stride(record_size: int) -> int:
    """Bytes one record takes in the ring: its 8-byte header, padded to 8."""
    return (record_size + RB_HDR + 7) & ~7


class RingReader:
    """Consumer side of a BPF ring buffer map, read through mmap (the layout is the
    kernel's uapi: a consumer page we write, a producer page, then the data area
    mapped twice so a record that wraps is contiguous). No per-record call into C or
    ctypes: when every record has the same size (trace.c only writes struct event_t),
    one pass checks all their headers at C speed (a strided memoryview) and copies the
    committed span as one chunk. Chunks hold records with their 8-byte headers;
    split them with `split_records()`."""

    def __init__(self, map_fd: int, size: int, record_size: int) -> None:
        page = mmap.PAGESIZE
        self.size, self.mask = size, size - 1
        self.record_size = record_size
        self.stride = stride(record_size)
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)
        self._data = memoryview(self._prod)[page:]
        self._pos = _U64.unpack_from(self._cons, 0)[0]

    def read(self, out: deque[bytes]) -> int:
        """Append the committed records to out as one chunk; return how many."""
        prod = _U64.unpack_from(self._prod, 0)[0]
        pos, n = self._pos, (prod - self._pos) // self.stride
        if n <= 0:
            return 0
        at = pos & self.mask
        span = self._data[at:at + n * self.stride]
        headers = span.cast("I")[::self.stride // 4]
        if headers.tolist().count(self.record_size) != n:
            # a record still being written (busy bit), or not ours: go one by one
            n = 0
            for h in headers.tolist():
                if h != self.record_size:
                    break
                n += 1
            if n == 0 and headers[0] & RB_BUSY == 0:
                raise RuntimeError(f"ring buffer record of {headers[0] & ~RB_DISCARD} "
                                   f"bytes, expected {self.record_size}")
        if n:
            out.append(bytes(span[:n * self.stride]))
            self._pos = pos + n * self.stride
            _U64.pack_into(self._cons, 0, self._pos)  # hand the space back
        span.release()
        return n

    def skip(self) -> None:
        """Hand back everything the producer has written so far, unread: the records a
        previous user of the same map left behind (loaded.py)."""
        self._pos = _U64.unpack_from(self._prod, 0)[0]
        _U64.pack_into(self._cons, 0, self._pos)

    def close(self) -> None:
        self._data.release()
        self._prod.close()
        self._cons.close()


def split_records(chunk: bytes, record_size: int) -> Iterator[bytes]:
    """The records of a RingReader chunk, without their headers."""
    step = stride(record_size)
    for off in range(0, len(chunk), step):
        yield chunk[off + RB_HDR:off + RB_HDR + record_size]


def count_records(chunks: deque[bytes], record_size: int) -> int:
    """How many records the chunks hold (copied from the ring, not decoded yet)."""
    return sum(len(c) for c in chunks) // stride(record_size)
