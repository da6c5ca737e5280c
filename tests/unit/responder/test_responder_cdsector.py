"""Raw MODE1 sectors: sync, header, EDC and ECC as ECMA-130 defines them, checked by hand."""

from __future__ import annotations

import random

import pytest

from vhba_responder.cdsector import SYNC, edc, gf_mul, gf_pow, header, mode1_sector


def _user(seed: int) -> bytes:
    return random.Random(seed).randbytes(2048)


def test_sync_and_header_are_the_address_in_bcd() -> None:
    sector = mode1_sector(0, _user(1))
    assert sector[:12] == SYNC == bytes.fromhex("00ffffffffffffffffffff00")
    assert sector[12:16] == bytes.fromhex("00020001")  # LBA 0 is 00:02:00, mode 1
    assert header(16) == bytes.fromhex("00021601")
    assert header(10 * 60 * 75 - 150) == bytes.fromhex("10000001")  # 10:00:00
    assert mode1_sector(0, _user(1))[16:2064] == _user(1)


def test_edc_is_the_crc_of_sync_header_and_data() -> None:
    sector = mode1_sector(1234, _user(2))
    stored = int.from_bytes(sector[2064:2068], "little")
    assert stored == edc(sector[:2064])
    # A CRC without final xor leaves no remainder over the data followed by itself.
    assert edc(sector[:2068]) == 0
    assert sector[2068:2076] == bytes(8)
    assert edc(b"") == 0 and edc(b"\x01") != 0


def _syndromes(symbols: list[int]) -> tuple[int, int]:
    """H . v for H = [[1 .. 1], [a^(n-1) .. a^0]] (ECMA-130 Annex A)."""
    n = len(symbols)
    s0 = s1 = 0
    for i, symbol in enumerate(symbols):
        s0 ^= symbol
        s1 ^= gf_mul(symbol, gf_pow(n - 1 - i))
    return s0, s1


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_every_p_and_q_codeword_checks(seed: int) -> None:
    sector = mode1_sector(seed * 1000, _user(seed))

    def byte(word: int, plane: int) -> int:
        return sector[12 + 2 * word + plane]

    for plane in (0, 1):
        for column in range(43):
            vector = [byte(43 * row + column, plane) for row in range(26)]
            assert _syndromes(vector) == (0, 0), ("P", plane, column)
        for diagonal in range(26):
            words = [(43 * diagonal + 44 * k) % 1118 for k in range(43)]
            words += [1118 + diagonal, 1118 + 26 + diagonal]
            assert _syndromes([byte(w, plane) for w in words]) == (0, 0), ("Q", diagonal)


def test_one_flipped_user_byte_breaks_its_codewords() -> None:
    sector = bytearray(mode1_sector(7, _user(7)))
    sector[16 + 100] ^= 0x5A
    column = (4 + 100) // 2 % 43  # byte 104 after the header's start: word 52, plane 0
    vector = [sector[12 + 2 * (43 * row + column)] for row in range(26)]
    assert _syndromes(vector) != (0, 0)
    assert edc(bytes(sector[:2068])) != 0


def test_user_data_must_be_one_block() -> None:
    with pytest.raises(ValueError, match="carries 2048 bytes, not 2047"):
        mode1_sector(0, bytes(2047))
