"""READ CD's per-sector assembly: which parts of a 2352-byte sector a CDB asks for.

READ CD (0xBE) names an expected sector type (byte 1) and a field selection
(byte 9: sync, header codes, user data, EDC/ECC, C2 error information;
byte 10: sub-channel).  This module turns one raw sector of a given track
mode into the bytes that selection returns, in the order MMC lays them out:
sync, header, sub-header, user data, EDC/ECC, C2, sub-channel.

Sector layouts (ECMA-130): Mode 1 is sync(12) header(4) user(2048) EDC(4)
zero(8) ECC(276); Mode 2 form 1 is sync header subheader(8) user(2048)
EDC(4) ECC(276); form 2 is sync header subheader user(2324) EDC(4); Mode 2
"formless" is sync header user(2336).  An audio sector is 2352 bytes of
samples and nothing else: any of sync/header/user/EDC selects all of it.

Known limits, on purpose: every field combination is accepted and assembled
(real drives refuse some, e.g. sync without header, with INVALID FIELD IN
CDB; no reader Linux ships sends them); C2 pointers and the block error byte
are always zero (an image has no read errors).
"""

from __future__ import annotations

from dataclasses import dataclass

SYNC_LEN, HEADER_LEN, SUBHEADER_LEN = 12, 4, 8
C2_LEN = 294

# Byte 1 bits 4-2: expected sector type.
ANY, CDDA, MODE1, MODE2_FORMLESS, MODE2_FORM1, MODE2_FORM2 = range(6)
# Byte 9.
SYNC_BIT, USER_BIT, EDC_BIT = 0x80, 0x10, 0x08
HEADER_ONLY, SUBHEADER_ONLY, ALL_HEADERS = 1, 2, 3
C2_BITS, C2_AND_BLOCK_ERROR = 1, 2
# Byte 10 bits 2-0.
SUB_NONE, SUB_RAW, SUB_Q, SUB_RW = 0, 1, 2, 4


class SectorTypeMismatch(ValueError):
    """The sector is not of the expected type: ILLEGAL MODE FOR THIS TRACK."""


class BadSelection(ValueError):
    """A reserved value in the field selection: INVALID FIELD IN CDB (byte, bit)."""

    def __init__(self, byte: int, bit: int) -> None:
        super().__init__(f"reserved value in CDB byte {byte}")
        self.byte, self.bit = byte, bit


@dataclass(frozen=True)
class Selection:
    """READ CD's bytes 1, 9 and 10, decoded."""

    sector_type: int
    sync: bool
    headers: int
    user: bool
    edc: bool
    c2: int
    subchannel: int

    @classmethod
    def of(cls, byte1: int, byte9: int, byte10: int) -> Selection:
        sector_type = (byte1 >> 2) & 0x07
        if sector_type > MODE2_FORM2:
            raise BadSelection(1, 4)
        c2 = (byte9 >> 1) & 0x03
        if c2 == 3:
            raise BadSelection(9, 2)
        sub = byte10 & 0x07
        if sub not in (SUB_NONE, SUB_RAW, SUB_Q, SUB_RW):
            raise BadSelection(10, 2)
        return cls(sector_type, bool(byte9 & SYNC_BIT), (byte9 >> 5) & 0x03,
                   bool(byte9 & USER_BIT), bool(byte9 & EDC_BIT), c2, sub)  # fmt: skip

    @property
    def main_channel(self) -> bool:
        return self.sync or bool(self.headers) or self.user or self.edc

    def select(self, raw: bytes, kind: int) -> bytes:
        """The selected main-channel fields and C2 data of one raw sector (no sub-channel)."""
        audio = raw if self.main_channel else b""
        main = audio if kind == CDDA else self._data_fields(raw, kind)
        if self.c2 == C2_BITS:
            main += bytes(C2_LEN)
        elif self.c2 == C2_AND_BLOCK_ERROR:
            main += bytes(C2_LEN + 2)  # block error byte, then a pad byte
        return main

    def _data_fields(self, raw: bytes, kind: int) -> bytes:
        subheader_end = 16 + (SUBHEADER_LEN if kind in (MODE2_FORM1, MODE2_FORM2) else 0)
        user_len = {MODE1: 2048, MODE2_FORM1: 2048, MODE2_FORM2: 2324}.get(kind, 2336)
        out = raw[:SYNC_LEN] if self.sync else b""
        if self.headers & HEADER_ONLY:
            out += raw[SYNC_LEN : SYNC_LEN + HEADER_LEN]
        if self.headers & SUBHEADER_ONLY:
            out += raw[16:subheader_end]
        user_end = subheader_end + user_len
        if self.user:
            out += raw[subheader_end:user_end]
        if self.edc:
            out += raw[user_end:]
        return out

    def check_type(self, kind: int) -> None:
        """Raise :class:`SectorTypeMismatch` unless a sector of ``kind`` may be read."""
        if self.sector_type == ANY:
            return
        if self.sector_type == MODE2_FORMLESS:
            ok = kind in (MODE2_FORMLESS, MODE2_FORM1, MODE2_FORM2)
        else:
            ok = kind == self.sector_type
        if not ok:
            raise SectorTypeMismatch(f"a sector of type {kind}, expected {self.sector_type}")

    def effective_kind(self, kind: int) -> int:
        """Mode 2 sectors read as formless when the CDB expects formless ones."""
        return MODE2_FORMLESS if self.sector_type == MODE2_FORMLESS and kind != CDDA else kind


def mode2_kind(raw: bytes) -> int:
    """Form 1 or form 2, from the sub-header's submode byte (bit 5: form 2)."""
    return MODE2_FORM2 if raw[18] & 0x20 else MODE2_FORM1


def sector_kind(track_mode: str, raw: bytes) -> int:
    """The sector type of a raw sector in a track of ``track_mode`` (a CUE mode)."""
    if track_mode == "AUDIO":
        return CDDA
    if track_mode == "MODE2/2352":
        return mode2_kind(raw)
    return MODE1
