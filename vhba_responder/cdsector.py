"""Raw CD sectors (2352 bytes) and the fields READ CD selects from them.

A data sector of a MODE1 track as the disc carries it (ECMA-130, 14):

    sync 12 | header 4 (M S F in BCD, mode) | user data 2048 | EDC 4 | zero 8 | P 172 | Q 104

An image with 2048-byte sectors keeps only the user data, so READ CD asking
for more must make the rest: :func:`mode1_sector` builds the sync pattern,
the header from the sector's address, the EDC (a CRC-32 over sync, header
and data, polynomial (x^16+x^15+x^2+1)(x^16+x^2+x+1), stored
least-significant byte first) and the two Reed-Solomon product-code parities
of ECMA-130 Annex A over GF(2^8) (x^8+x^4+x^3+x^2+1):

* P: the 1032 16-bit words from the header on form 24 rows of 43 columns;
  each column, with its two parity words appended, is a codeword of the
  check matrix ``[[1]*26, [a^25 .. a^0]]``;
* Q: 26 diagonals (word ``43*d + 44*k mod 1118``, k = 0..42) of the 26 rows
  (data + P), each with two parity words, codewords of ``[[1]*45, [a^44 .. a^0]]``.

Each byte of a word (the two "planes") is coded on its own.  An audio
sector is 2352 bytes of samples with no sync, header or error codes.
"""

from __future__ import annotations

SECTOR = 2352
USER = 2048
SYNC = b"\x00" + b"\xff" * 10 + b"\x00"
_HEADER_AT, _USER_AT, _EDC_AT, _P_AT, _Q_AT = 12, 16, 2064, 2076, 2248
MSF_OFFSET = 150

# GF(2^8) with the primitive polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), a = 2.
_EXP = [0] * 512
_LOG = [0] * 256
_value = 1
for _power in range(255):
    _EXP[_power] = _value
    _LOG[_value] = _power
    _value <<= 1
    if _value & 0x100:
        _value ^= 0x11D
for _power in range(255, 512):
    _EXP[_power] = _EXP[_power - 255]


def gf_mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else _EXP[_LOG[a] + _LOG[b]]


def gf_pow(power: int) -> int:
    """a^power."""
    return _EXP[power % 255]


_INV_A_PLUS_1 = _EXP[255 - _LOG[gf_pow(1) ^ 1]]  # 1 / (a + 1)


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xD8018001 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC = _crc_table()


def edc(data: bytes) -> int:
    """The EDC of ``data`` (least-significant bit first, initial value 0, no final xor)."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _CRC[(crc ^ byte) & 0xFF]
    return crc


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def header(lba: int, mode: int = 1) -> bytes:
    """The 4-byte header: the sector's absolute address (LBA + 150) in BCD, then the mode."""
    frames = lba + MSF_OFFSET
    minutes, seconds, frame = frames // 4500, frames // 75 % 60, frames % 75
    return bytes((_bcd(minutes), _bcd(seconds), _bcd(frame), mode))


def _parity(symbols: list[int]) -> tuple[int, int]:
    """The two parity symbols that end a codeword of ``[[1..1], [a^(n-1) .. a^0]]``."""
    n = len(symbols) + 2
    total = weighted = 0
    for i, symbol in enumerate(symbols):
        total ^= symbol
        weighted ^= gf_mul(symbol, gf_pow(n - 1 - i))
    first = gf_mul(total ^ weighted, _INV_A_PLUS_1)
    return first, total ^ first


def _word_byte(word: int, plane: int) -> int:
    """The sector offset of byte ``plane`` of 16-bit word ``word`` (counted from the header)."""
    return _HEADER_AT + 2 * word + plane


def add_ecc(sector: bytearray) -> None:
    """Fill in the P and Q parity of a 2352-byte sector whose header..EDC are set."""
    for plane in (0, 1):
        for column in range(43):
            data = [sector[_word_byte(43 * row + column, plane)] for row in range(24)]
            p0, p1 = _parity(data)
            sector[_word_byte(43 * 24 + column, plane)] = p0
            sector[_word_byte(43 * 25 + column, plane)] = p1
    for plane in (0, 1):
        for diagonal in range(26):
            words = [(43 * diagonal + 44 * k) % 1118 for k in range(43)]
            q0, q1 = _parity([sector[_word_byte(w, plane)] for w in words])
            sector[_word_byte(1118 + diagonal, plane)] = q0
            sector[_word_byte(1118 + 26 + diagonal, plane)] = q1


def mode1_sector(lba: int, user_data: bytes) -> bytes:
    """The full 2352-byte MODE1 sector at ``lba`` carrying ``user_data`` (2048 bytes)."""
    if len(user_data) != USER:
        raise ValueError(f"a MODE1 sector carries {USER} bytes, not {len(user_data)}")
    sector = bytearray(SECTOR)
    sector[:_HEADER_AT] = SYNC
    sector[_HEADER_AT:_USER_AT] = header(lba, 1)
    sector[_USER_AT:_EDC_AT] = user_data
    sector[_EDC_AT : _EDC_AT + 4] = edc(bytes(sector[:_EDC_AT])).to_bytes(4, "little")
    add_ecc(sector)
    return bytes(sector)
