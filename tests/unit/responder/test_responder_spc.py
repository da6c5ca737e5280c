"""INQUIRY, VPD, REQUEST SENSE, MODE SENSE/SELECT, REPORT LUNS, unknown opcodes."""

from __future__ import annotations

import pytest
from _responder_helpers import be, check, ok, run

from vhba_responder.commands.modepages import MAX_READ_SPEED_KBPS


def test_standard_inquiry_fields(dev):
    data = ok(dev, 0x12, 0, 0, 0, 96, 0)
    assert len(data) == 96
    assert data[0] == 0x05  # qualifier 0, CD/DVD
    assert data[1] & 0x80  # RMB
    assert data[2] == 0x05  # SPC-3
    assert data[3] & 0x0F == 2  # response data format
    assert data[4] == 91  # additional length = 96 - 5
    assert data[8:16] == b"VHBALAB "
    assert data[16:32] == b"Virtual CD/DVD  "
    assert data[32:36] == b"0.1 "
    descriptors = [be(data[58 + 2 * i : 60 + 2 * i]) for i in range(8)]
    assert 0x0300 in descriptors and 0x02A0 in descriptors


@pytest.mark.parametrize("alloc", [0, 5, 36, 95])
def test_inquiry_allocation_length_truncates(dev, alloc):
    full = ok(dev, 0x12, 0, 0, 0, 96, 0)
    assert ok(dev, 0x12, 0, 0, 0, alloc, 0) == full[:alloc]


def test_inquiry_two_byte_allocation_length(dev):
    assert len(ok(dev, 0x12, 0, 0, 0x01, 0x00, 0)) == 96


def test_inquiry_transport_buffer_limits_too(dev):
    assert len(ok(dev, 0x12, 0, 0, 0, 96, 0, alloc=36)) == 36


def test_inquiry_page_code_without_evpd_is_invalid(dev):
    s = check(dev, 0x12, 0, 0x80, 0, 96, 0)
    assert s.triple == "05/24/00"


def test_vpd_supported_pages(dev):
    data = ok(dev, 0x12, 1, 0x00, 0, 255, 0)
    assert data[0] == 0x05 and data[1] == 0x00
    pages = list(data[4 : 4 + data[3]])
    assert pages == sorted(pages)
    assert {0x00, 0x80, 0x83} <= set(pages)


def test_vpd_serial(dev):
    data = ok(dev, 0x12, 1, 0x80, 0, 255, 0)
    assert data[1] == 0x80
    assert data[4 : 4 + data[3]] == dev.identity.serial.encode()


def test_vpd_device_identification(dev):
    data = ok(dev, 0x12, 1, 0x83, 0, 255, 0)
    assert data[1] == 0x83
    page_len = be(data[2:4])
    assert len(data) == 4 + page_len
    desig = data[4:]
    assert desig[0] & 0x0F == 2  # ASCII
    assert desig[1] & 0x0F == 1  # T10 vendor ID
    assert (desig[1] >> 4) & 0x3 == 0  # associated with the LU
    ident = desig[4 : 4 + desig[3]]
    assert ident.startswith(b"VHBALAB ") and ident.endswith(dev.identity.serial.encode())


def test_unknown_vpd_page(dev):
    assert check(dev, 0x12, 1, 0xB0, 0, 255, 0).triple == "05/24/00"


def test_unknown_opcode(dev):
    s = check(dev, 0xF7, 0, 0, 0, 0, 0)
    assert s.triple == "05/20/00"


def test_sixteen_byte_opcode_unsupported(dev):
    assert check(dev, 0x9E, 0x10, *([0] * 14)).triple == "05/20/00"


def test_request_sense_no_sense_when_clean(dev):
    data = ok(dev, 0x03, 0, 0, 0, 18, 0)
    assert len(data) == 18 and data[0] == 0x70 and data[2] == 0 and data[12:14] == b"\0\0"


def test_request_sense_returns_last_sense_once(dev):
    check(dev, 0xF7, 0, 0, 0, 0, 0)
    data = ok(dev, 0x03, 0, 0, 0, 252, 0)
    assert data[2] == 0x05 and (data[12], data[13]) == (0x20, 0x00)
    again = ok(dev, 0x03, 0, 0, 0, 252, 0)
    assert again[2] == 0 and again[12] == 0


def test_request_sense_desc_bit_rejected(dev):
    assert check(dev, 0x03, 1, 0, 0, 18, 0).triple == "05/24/00"


def test_request_sense_truncates(dev):
    assert len(ok(dev, 0x03, 0, 0, 0, 8, 0)) == 8


# ------------------------------------------------------------------ MODE SENSE
def _page(data: bytes, header: int, code: int) -> bytes:
    pos = header
    while pos < len(data):
        if data[pos] & 0x3F == code:
            return data[pos : pos + 2 + data[pos + 1]]
        pos += 2 + data[pos + 1]
    raise AssertionError(f"page {code:#x} missing")


def test_mode_sense6_page_2a(dev):
    data = ok(dev, 0x1A, 0x08, 0x2A, 0, 128, 0)
    assert data[0] == len(data) - 1
    assert data[3] == 0  # no block descriptors
    n = 4
    page = data[n:]
    assert page[0] & 0x3F == 0x2A
    assert page[1] == len(page) - 2 >= 0x14
    assert page[2] & 0x08  # DVD-ROM read
    assert page[3] == 0  # writes nothing
    assert page[6] >> 5 == 1  # tray loading mechanism
    assert page[6] & 0x08 and page[6] & 0x01  # eject, lock
    assert not page[6] & 0x02  # not locked now
    assert be(page[8:10]) == MAX_READ_SPEED_KBPS and be(page[8:10]) // 176 == 48


def test_mode_sense10_page_2a_same_page_different_header(dev):
    six = ok(dev, 0x1A, 0x08, 0x2A, 0, 128, 0)
    ten = ok(dev, 0x5A, 0x08, 0x2A, 0, 0, 0, 0, 0, 128, 0)
    assert be(ten[0:2]) == len(ten) - 2
    assert be(ten[6:8]) == 0  # block descriptor length
    assert ten[8:] == six[4:]


def test_mode_sense_lock_state_follows_prevent(dev):
    ok(dev, 0x1E, 0, 0, 0, 1, 0)
    page = ok(dev, 0x1A, 0x08, 0x2A, 0, 128, 0)[4:]
    assert page[6] & 0x02


def test_mode_sense_all_pages(dev):
    data = ok(dev, 0x5A, 0, 0x3F, 0, 0, 0, 0, 0xFF, 0xFF, 0)
    codes = []
    pos = 8
    while pos < len(data):
        codes.append(data[pos] & 0x3F)
        pos += 2 + data[pos + 1]
    assert pos == len(data)
    assert codes == [0x01, 0x0D, 0x1A, 0x2A]
    cdparams = _page(data, 8, 0x0D)
    assert be(cdparams[4:6]) == 60 and be(cdparams[6:8]) == 75


def test_mode_sense_changeable_values_are_zero(dev):
    data = ok(dev, 0x1A, 0x08, 0x40 | 0x2A, 0, 128, 0)
    assert data[4] & 0x3F == 0x2A and data[6:] == bytes(len(data) - 6)


def test_mode_sense_saved_values_unsupported(dev):
    assert check(dev, 0x1A, 0, 0xC0 | 0x2A, 0, 128, 0).triple == "05/39/00"


def test_mode_sense_unknown_page(dev):
    assert check(dev, 0x1A, 0, 0x05, 0, 128, 0).triple == "05/24/00"


def test_mode_sense_bad_subpage(dev):
    assert check(dev, 0x1A, 0, 0x2A, 0x01, 128, 0).triple == "05/24/00"


def test_mode_sense6_truncation(dev):
    full = ok(dev, 0x1A, 0, 0x3F, 0, 255, 0)
    assert ok(dev, 0x1A, 0, 0x3F, 0, 10, 0) == full[:10]


def test_mode_sense_works_without_medium(empty_dev):
    ok(empty_dev, 0x1A, 0x08, 0x2A, 0, 128, 0)


# ----------------------------------------------------------------- MODE SELECT
def _page01() -> bytes:
    return bytes((0x01, 0x0A, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0))


def test_mode_select6_accepts_valid_list(dev):
    plist = bytes(4) + _page01()
    ok(dev, 0x15, 0x10, 0, 0, len(plist), 0, data_out=plist)


def test_mode_select10_with_block_descriptor(dev):
    bd = bytes((0, 0, 0, 0, 0, 0, 0x08, 0x00))
    plist = bytes(6) + (8).to_bytes(2, "big") + bd + _page01()
    ok(dev, 0x55, 0x10, 0, 0, 0, 0, 0, 0, len(plist), 0, data_out=plist)


def test_mode_select_rejects_other_block_length(dev):
    bd = bytes((0, 0, 0, 0, 0, 0, 0x09, 0x20))  # 2336
    plist = bytes((0, 0, 0, 8)) + bd
    s = check(dev, 0x15, 0x10, 0, 0, len(plist), 0, data_out=plist)
    assert s.triple == "05/26/00"


def test_mode_select_wrong_page_length(dev):
    plist = bytes(4) + bytes((0x2A, 0x10)) + bytes(16)
    assert check(dev, 0x15, 0x10, 0, 0, len(plist), 0, data_out=plist).triple == "05/26/00"


def test_mode_select_list_shorter_than_header(dev):
    assert check(dev, 0x55, 0x10, 0, 0, 0, 0, 0, 0, 4, 0, data_out=bytes(4)).triple == "05/1A/00"


def test_mode_select_truncated_page(dev):
    plist = bytes(4) + _page01()[:6]
    assert check(dev, 0x15, 0x10, 0, 0, len(plist), 0, data_out=plist).triple == "05/26/00"


def test_mode_select_save_pages_rejected(dev):
    assert check(dev, 0x15, 0x11, 0, 0, 0, 0).triple == "05/24/00"


# ------------------------------------------------------------ REPORT LUNS etc.
def test_report_luns(dev):
    data = ok(dev, 0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0)
    assert data == (8).to_bytes(4, "big") + bytes(4) + bytes(8)


def test_report_luns_bad_select_report(dev):
    assert check(dev, 0xA0, 0, 7, 0, 0, 0, 0, 0, 0, 16, 0, 0).triple == "05/24/00"


def test_synchronize_cache_good(dev):
    assert run(dev, 0x35, *([0] * 9)).status == 0


def test_short_cdb_rejected(dev):
    resp = run(dev, 0x28, 0, 0)
    assert resp.status == 2 and resp.sense_text == "05/24/00"
