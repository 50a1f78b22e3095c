"""Just enough of a BTF reader to find struct member offsets in the running kernel.

Why our own reader: the installed kernel headers (Debian 6.1) do not describe the
running kernel (6.18), so sk_buff, net_device and sock have other layouts there. The
kernel describes itself in /sys/kernel/btf/vmlinux; reading member offsets from it
needs only the type section, which is a few dozen lines rather than a dependency.
"""

from __future__ import annotations

import struct
from pathlib import Path

BTF_PATH = "/sys/kernel/btf/vmlinux"

# Bytes that follow the 12-byte btf_type header, per kind (uapi linux/btf.h); for the
# kinds in _PER_VLEN that many bytes per vlen entry.
_BTF_EXTRA = {1: 4, 3: 12, 4: 12, 5: 12, 6: 8, 13: 8, 14: 4, 15: 12, 17: 4, 19: 12}
_PER_VLEN = {4, 5, 6, 13, 15, 19}
_MODIFIERS = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag
_STRUCT, _UNION = 4, 5


class Btf:
    """The type section of one BTF blob, indexed by struct/union name."""

    def __init__(self, path: str = BTF_PATH) -> None:
        self.data = Path(path).read_bytes()
        magic, _v, _f, hdr, toff, tlen, soff, _slen = struct.unpack_from("<HBBIIIII",
                                                                          self.data, 0)
        if magic != 0xEB9F:
            raise ValueError(f"{path}: not BTF")
        self.strs = hdr + soff
        self.types: list[tuple[int, int, int, int, int, int]] = [(0, 0, 0, 0, 0, 0)]
        self.by_name: dict[tuple[str, int], int] = {}
        pos, end = hdr + toff, hdr + toff + tlen
        while pos < end:
            name_off, info, size = struct.unpack_from("<III", self.data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self.types.append((pos, kind, vlen, info >> 31, name_off, size))
            if kind in (_STRUCT, _UNION) and name_off:
                self.by_name.setdefault((self._str(name_off), kind), len(self.types) - 1)
            extra = _BTF_EXTRA.get(kind, 0)
            pos += 12 + (extra * vlen if kind in _PER_VLEN else extra)

    def _str(self, off: int) -> str:
        start = self.strs + off
        return self.data[start:self.data.index(b"\0", start)].decode()

    def _strip(self, tid: int) -> int:
        while self.types[tid][1] in _MODIFIERS:
            tid = self.types[tid][5]
        return tid

    def _member(self, tid: int, name: str) -> tuple[int, int] | None:
        """(byte offset, type id) of `name`, looking through anonymous members."""
        pos, kind, vlen, kflag, _n, _s = self.types[self._strip(tid)]
        if kind not in (_STRUCT, _UNION):
            return None
        for i in range(vlen):
            m_name, m_type, m_off = struct.unpack_from("<III", self.data, pos + 12 + 12 * i)
            bits = m_off & 0xFFFFFF if kflag else m_off
            if m_name and self._str(m_name) == name:
                return bits // 8, m_type
            if not m_name:
                inner = self._member(m_type, name)
                if inner:
                    return bits // 8 + inner[0], inner[1]
        return None

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of a dotted member path ("nd_net.net") inside struct_name."""
        tid = self.by_name.get((struct_name, _STRUCT)) or self.by_name.get((struct_name, _UNION))
        if tid is None:
            raise KeyError(f"BTF has no struct {struct_name}")
        total = 0
        for part in path.split("."):
            found = self._member(tid, part)
            if found is None:
                raise KeyError(f"BTF: struct {struct_name} has no member {path}")
            total += found[0]
            tid = found[1]
        return total
