"""The Q sub-channel of a sector, synthesised from the disc layout, and its READ CD forms.

A pressed CD carries 96 bits of sub-channel per sector in eight channels
P..W.  Readers look at two of them: P (set through a pause, i.e. a track's
pregap) and Q, whose mode-1 frame says where the head is: the track, the
index, the time within the track and the absolute time, all in BCD, closed by
a CRC-16 (generator x^16 + x^12 + x^5 + 1, stored inverted).  An image has no
sub-channel of its own (CUE/BIN never does), so it is made up here the way a
mastering tool writes it.  R..W (CD+G graphics) are always zero.

Relative time in a pregap counts down towards INDEX 01: the sector just
before the track's start is 00:00:01.
"""

from __future__ import annotations

from vhba_responder.cue import MSF_OFFSET, DiscLayout

Q_BYTES = 12  # 10 bytes of mode-1 Q plus the CRC
RAW_BYTES = 96  # P..W, one bit of each channel per byte
FORMATTED_Q_BYTES = 16  # READ CD sub-channel selection 010b


def bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _msf_bcd(frames: int) -> bytes:
    frames = max(frames, 0)
    return bytes((bcd(frames // 4500 % 100), bcd(frames // 75 % 60), bcd(frames % 75)))


def crc16(data: bytes) -> int:
    """CRC-16/CCITT over ``data``, initial value 0, as Q stores it before inverting."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def q_frame(disc: DiscLayout, lba: int) -> bytes:
    """The 12 Q bytes of ``lba``: CONTROL/ADR, TNO, INDEX, relative MSF, 0, absolute MSF, CRC."""
    track = disc.track_at(lba)
    index = track.index_at(lba)
    relative = track.start - lba if index == 0 else lba - track.start
    body = (
        bytes((track.control << 4 | 1, bcd(track.number), bcd(index)))
        + _msf_bcd(relative)
        + b"\0"
        + _msf_bcd(lba + MSF_OFFSET)
    )
    return body + (crc16(body) ^ 0xFFFF).to_bytes(2, "big")


def in_pause(disc: DiscLayout, lba: int) -> bool:
    """P channel: set in a pregap (INDEX 00)."""
    return disc.track_at(lba).index_at(lba) == 0


def raw_pw(disc: DiscLayout, lba: int) -> bytes:
    """The 96 interleaved P..W bytes: bit 7 is P, bit 6 is Q (most significant bit first)."""
    q = q_frame(disc, lba)
    p = 0x80 if in_pause(disc, lba) else 0
    return bytes(p | ((q[i // 8] >> (7 - i % 8)) & 1) << 6 for i in range(RAW_BYTES))


def formatted_q(disc: DiscLayout, lba: int) -> bytes:
    """READ CD's formatted Q: the 12 Q bytes, then four zero bytes."""
    return q_frame(disc, lba) + bytes(FORMATTED_Q_BYTES - Q_BYTES)


def deinterleaved_rw(disc: DiscLayout, lba: int) -> bytes:
    """READ CD's R-W selection: no CD+G data on any of our discs."""
    return bytes(RAW_BYTES)
