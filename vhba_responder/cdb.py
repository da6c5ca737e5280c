"""CDB field access and MMC address helpers.

The kernel hands over a 16-byte CDB field of which only ``cdb_len`` bytes are
meaningful; :class:`Cdb` zero-pads to 16 so handlers can read any offset
without bounds checks, while still knowing the real length.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CDB_LEN = 16
MSF_OFFSET = 150  # LBA 0 is MSF 00:02:00 (the 2-second pregap)


@dataclass(frozen=True)
class Cdb:
    """A received CDB, zero-padded to 16 bytes."""

    raw: bytes

    @classmethod
    def of(cls, data: bytes) -> Cdb:
        return cls(bytes(data[:MAX_CDB_LEN]).ljust(MAX_CDB_LEN, b"\0"))

    @property
    def opcode(self) -> int:
        return self.raw[0]

    def u8(self, off: int) -> int:
        return self.raw[off]

    def u16(self, off: int) -> int:
        return int.from_bytes(self.raw[off : off + 2], "big")

    def u24(self, off: int) -> int:
        return int.from_bytes(self.raw[off : off + 3], "big")

    def u32(self, off: int) -> int:
        return int.from_bytes(self.raw[off : off + 4], "big")

    def bit(self, off: int, bit: int) -> bool:
        return bool(self.raw[off] >> bit & 1)

    def uint(self, off: int, size: int) -> int:
        return int.from_bytes(self.raw[off : off + size], "big")


def be16(v: int) -> bytes:
    return (v & 0xFFFF).to_bytes(2, "big")


def be24(v: int) -> bytes:
    return (v & 0xFFFFFF).to_bytes(3, "big")


def be32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "big")


def lba_to_msf(lba: int) -> tuple[int, int, int]:
    """Convert an LBA to (minute, second, frame), clamped to 255:59:74.

    DVD capacities overflow the one-byte minute field; MMC leaves the value
    undefined there, and clamping keeps the bytes well-formed.
    """
    total = lba + MSF_OFFSET
    if total < 0:
        total = 0
    minute, rest = divmod(total, 60 * 75)
    second, frame = divmod(rest, 75)
    if minute > 255:
        return 255, 59, 74
    return minute, second, frame


def address_field(lba: int, msf: bool) -> bytes:
    """A 4-byte TOC/sub-channel address in LBA or MSF (0, M, S, F) form."""
    if msf:
        m, s, f = lba_to_msf(lba)
        return bytes((0, m, s, f))
    return be32(lba)
