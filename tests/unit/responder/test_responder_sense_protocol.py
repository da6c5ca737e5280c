"""Sense encoding and the vhba request/response wire format."""

from __future__ import annotations

import struct

import pytest

from vhba_responder.protocol import (
    REQUEST,
    RESPONSE,
    SENSE_MAX,
    Request,
    pack_response,
    parse_request,
    unpack_response,
)
from vhba_responder.sense import (
    Ascs,
    FieldPointer,
    SenseError,
    SenseKey,
    decode_fixed,
    encode_fixed,
)


def test_fixed_sense_layout_without_information():
    s = encode_fixed(SenseKey.NOT_READY, 0x3A, 0x01)
    assert len(s) == 18
    assert s[0] == 0x70  # current, VALID clear
    assert s[2] == 0x02
    assert s[3:7] == bytes(4)
    assert s[7] == 10
    assert (s[12], s[13]) == (0x3A, 0x01)
    assert s[15:18] == bytes(3)


def test_fixed_sense_information_sets_valid():
    s = encode_fixed(SenseKey.ILLEGAL_REQUEST, 0x21, 0, information=0x01020304)
    assert s[0] == 0xF0
    assert s[3:7] == b"\x01\x02\x03\x04"
    d = decode_fixed(s)
    assert d.valid and d.information == 0x01020304 and d.triple == "05/21/00"


def test_field_pointer_encoding():
    err = SenseError(SenseKey.ILLEGAL_REQUEST, Ascs.INVALID_FIELD_IN_CDB, field=FieldPointer(2, 5))
    s = err.encode()
    assert s[15] == 0x80 | 0x40 | 0x08 | 5  # SKSV, C/D, BPV, bit 5
    assert s[16:18] == b"\x00\x02"
    assert err.triple == "05/24/00"


def test_decode_rejects_descriptor_format():
    with pytest.raises(ValueError):
        decode_fixed(bytes([0x72]) + bytes(17))


def test_struct_sizes_match_abi():
    assert REQUEST.size == 32 and RESPONSE.size == 12
    assert struct.calcsize("@II16sBI") == 32


def test_request_roundtrip_with_data_out():
    cdb = bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, 12, 0])
    req = Request(tag=7, lun=0, cdb=cdb, data_len=12, data_out=b"x" * 12)
    raw = req.pack()
    assert len(raw) == 32 + 12
    # Header fields at the documented offsets, host byte order.
    assert struct.unpack_from("=I", raw, 0)[0] == 7
    assert raw[8:18] == cdb and raw[18:24] == bytes(6)
    assert raw[24] == 10
    assert struct.unpack_from("=I", raw, 28)[0] == 12
    assert parse_request(raw) == req


def test_parse_ignores_padding_garbage_and_trailing_cdb_bytes():
    raw = bytearray(REQUEST.pack(1, 0, bytes([0x00] * 6) + b"\xee" * 10, 6, 0))
    raw[25:28] = b"\xaa\xbb\xcc"  # kernel stack garbage in the padding
    req = parse_request(bytes(raw))
    assert req.cdb == bytes(6) and req.data_out == b"" and req.tag == 1


def test_parse_short_read_is_an_error():
    with pytest.raises(ValueError):
        parse_request(b"\0" * 31)


def test_response_packing():
    raw = pack_response(0xDEAD, 2, b"s" * 18)
    assert len(raw) == 12 + 18
    assert struct.unpack_from("=III", raw) == (0xDEAD, 2, 18)
    assert unpack_response(raw) == (0xDEAD, 2, b"s" * 18)
    assert SENSE_MAX == 96
