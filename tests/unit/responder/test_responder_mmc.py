"""READ TOC, disc/track information, GET CONFIGURATION, GESN and the small MMC commands."""

from __future__ import annotations

import pytest
from _responder_helpers import be, check, ok

from vhba_responder.cdb import lba_to_msf
from vhba_responder.device import Device
from vhba_responder.media import MediaKind, Medium


def _toc(fmt: int = 0, msf: bool = False, track: int = 0, alloc: int = 0xFFFF, control: int = 0):
    return (0x43, 0x02 if msf else 0, fmt, 0, 0, 0, track, alloc >> 8, alloc & 0xFF, control)


def _msf(lba: int) -> bytes:
    return bytes((0, *lba_to_msf(lba)))


# -------------------------------------------------------------------- READ TOC
def test_toc_format0_lba(dev, iso):
    data = ok(dev, *_toc())
    assert be(data[0:2]) == len(data) - 2 == 2 + 16
    assert (data[2], data[3]) == (1, 1)
    t1, lo = data[4:12], data[12:20]
    assert t1[1] == 0x14 and t1[2] == 1 and be(t1[4:8]) == 0
    assert t1[1] & 0x04  # data track (CTRL bit 2)
    assert lo[2] == 0xAA and be(lo[4:8]) == iso.blocks


def test_toc_format0_msf(dev, iso):
    data = ok(dev, *_toc(msf=True))
    assert data[8:12] == b"\x00\x00\x02\x00"  # track 1 at 00:02:00
    assert data[16:20] == _msf(iso.blocks)


def test_lba_to_msf_values():
    assert lba_to_msf(0) == (0, 2, 0)
    assert lba_to_msf(4350) == (1, 0, 0)
    assert lba_to_msf(10_000_000) == (255, 59, 74)


def test_toc_leadout_only_and_bad_track(dev, iso):
    data = ok(dev, *_toc(track=0xAA))
    assert be(data[0:2]) == 10 and data[6] == 0xAA and be(data[8:12]) == iso.blocks
    assert check(dev, *_toc(track=2)).triple == "05/24/00"


def test_toc_header_only_alloc(dev):
    data = ok(dev, *_toc(alloc=12))
    assert len(data) == 12 and be(data[0:2]) == 18  # length reflects the full TOC


@pytest.mark.parametrize("msf", [False, True])
def test_toc_format1_session_info(dev, msf):
    data = ok(dev, *_toc(fmt=1, msf=msf))
    assert len(data) == 12 and be(data[0:2]) == 0x0A
    assert (data[2], data[3]) == (1, 1)
    assert data[5] == 0x14 and data[6] == 1
    assert data[8:12] == (_msf(0) if msf else bytes(4))


@pytest.mark.parametrize("msf", [False, True])
def test_toc_legacy_control_byte_session_format(dev, msf):
    """Linux sr_cd_check: format 0 in byte 2, 0x40 in byte 9, alloc 12."""
    data = ok(dev, *_toc(fmt=0, msf=msf, alloc=12, control=0x40))
    assert data == ok(dev, *_toc(fmt=1, msf=msf, alloc=12))
    assert be(data[0:2]) >= 0x0A and data[6] == 1


def test_toc_full_format2(dev, iso):
    data = ok(dev, *_toc(fmt=2))
    points = {data[i + 3]: data[i : i + 11] for i in range(4, len(data), 11)}
    assert set(points) == {0xA0, 0xA1, 0xA2, 1}
    assert points[0xA0][8] == 1 and points[0xA1][8] == 1
    assert bytes(points[0xA2][8:11]) == bytes(lba_to_msf(iso.blocks))


def test_toc_unsupported_format(dev):
    assert check(dev, *_toc(fmt=4)).triple == "05/24/00"


def test_toc_without_medium(empty_dev):
    assert check(empty_dev, *_toc()).triple == "02/3A/01"


# ------------------------------------------------------ disc/track information
def test_disc_information(dev):
    data = ok(dev, 0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0)
    assert len(data) == 34 and be(data[0:2]) == 32
    assert data[2] & 0x03 == 2  # disc complete
    assert (data[2] >> 2) & 0x03 == 3  # last session complete
    assert not data[2] & 0x10  # not erasable
    assert data[3] == 1  # first track
    assert (data[4], data[9]) == (1, 0)  # sessions
    assert (data[5], data[10]) == (1, 0)  # first track in last session
    assert (data[6], data[11]) == (1, 0)  # last track in last session


def test_disc_information_two_byte_probe(dev):
    data = ok(dev, 0x51, 0, 0, 0, 0, 0, 0, 0, 2, 0)
    assert data == (32).to_bytes(2, "big")


def test_disc_information_other_type(dev):
    assert check(dev, 0x51, 1, 0, 0, 0, 0, 0, 0, 34, 0).triple == "05/24/00"


@pytest.mark.parametrize("addr_type,value", [(1, 1), (0, 0), (0, 20), (2, 1)])
def test_track_information(dev, iso, addr_type, value):
    data = ok(dev, 0x52, addr_type, *value.to_bytes(4, "big"), 0, 0, 36, 0)
    assert len(data) == 36 and be(data[0:2]) == 34
    assert data[2] == 1 and data[3] == 1
    assert data[5] & 0x0F == 4  # data track
    assert not data[6] & 0x40  # not blank
    assert data[6] & 0x0F == 1  # mode 1
    assert be(data[8:12]) == 0
    assert be(data[24:28]) == iso.blocks
    assert be(data[16:20]) == 0  # no free blocks
    # Linux cdrom_get_last_written: start + size must equal READ CAPACITY's count.
    cap = ok(dev, 0x25, *([0] * 9))
    assert be(data[8:12]) + be(data[24:28]) == be(cap[0:4]) + 1


def test_track_information_eight_byte_probe(dev):
    assert ok(dev, 0x52, 1, 0, 0, 0, 1, 0, 0, 8, 0)[:2] == (34).to_bytes(2, "big")


@pytest.mark.parametrize("addr_type,value", [(1, 2), (1, 0), (1, 0xFF), (2, 2), (3, 1)])
def test_track_information_invalid(dev, addr_type, value):
    assert check(dev, 0x52, addr_type, *value.to_bytes(4, "big"), 0, 0, 36, 0).triple == "05/24/00"


def test_track_information_lba_past_end(dev, iso):
    s = check(dev, 0x52, 0, *iso.blocks.to_bytes(4, "big"), 0, 0, 36, 0)
    assert s.triple == "05/24/00"


# ------------------------------------------------------------ GET CONFIGURATION
def _features(data: bytes) -> dict[int, bytes]:
    out = {}
    pos = 8
    while pos < len(data):
        code = be(data[pos : pos + 2])
        n = data[pos + 3]
        out[code] = data[pos : pos + 4 + n]
        pos += 4 + n
    assert pos == len(data)
    return out


def _getconf(rt: int, start: int = 0, alloc: int = 0xFFFF):
    return (0x46, rt, start >> 8, start & 0xFF, 0, 0, 0, alloc >> 8, alloc & 0xFF, 0)


def test_get_configuration_rt0(dev):
    data = ok(dev, *_getconf(0))
    assert be(data[0:4]) == len(data) - 4
    assert be(data[6:8]) == 0x0008  # CD-ROM
    feats = _features(data)
    assert list(feats) == sorted(feats)
    assert {0x0000, 0x0001, 0x0002, 0x0003, 0x0010, 0x001E, 0x001F, 0x0100} <= set(feats)
    plist = feats[0x0000]
    assert plist[2] & 0x03 == 0x03  # persistent + current
    profiles = {be(plist[i : i + 2]): plist[i + 2] & 1 for i in range(4, len(plist), 4)}
    assert profiles == {0x0010: 0, 0x0008: 1}
    assert be(feats[0x0001][4:8]) in (1, 2)  # physical interface: SCSI or ATAPI
    assert feats[0x0003][4] >> 5 == 1 and feats[0x0003][4] & 0x09 == 0x09  # tray, eject, lock
    assert be(feats[0x0010][4:8]) == 2048
    assert feats[0x001E][2] & 1 == 1  # CD Read current
    assert feats[0x001F][2] & 1 == 0  # DVD Read not current


def test_get_configuration_rt1_only_current(dev):
    feats = _features(ok(dev, *_getconf(1)))
    assert all(f[2] & 1 for f in feats.values())
    assert 0x001E in feats and 0x001F not in feats


def test_get_configuration_rt2_single(dev):
    data = ok(dev, *_getconf(2, 0x0003))
    feats = _features(data)
    assert list(feats) == [0x0003]
    assert list(_features(ok(dev, *_getconf(2, 0x0024)))) == []


def test_get_configuration_start_feature(dev):
    feats = _features(ok(dev, *_getconf(0, 0x0010)))
    assert min(feats) == 0x0010


def test_get_configuration_rt3_invalid(dev):
    assert check(dev, *_getconf(3)).triple == "05/24/00"


def test_get_configuration_header_probe(dev):
    full = ok(dev, *_getconf(0))
    head = ok(dev, *_getconf(0, alloc=8))
    assert head == full[:8]


def test_get_configuration_no_medium(empty_dev):
    data = ok(empty_dev, *_getconf(0))
    assert be(data[6:8]) == 0
    feats = _features(data)
    assert not feats[0x0010][2] & 1
    plist = feats[0x0000]
    assert all(not plist[i + 2] & 1 for i in range(4, len(plist), 4))


def test_get_configuration_dvd():
    d = Device()
    d.state.medium = Medium.from_bytes(bytes(2048 * 32), kind=MediaKind.DVD_ROM)
    feats = _features(ok(d, *_getconf(1)))
    assert 0x001F in feats and 0x001E not in feats
    assert be(feats[0x0010][8:10]) == 16  # DVD blocking


# -------------------------------------------------------------------- GESN
def _gesn(cls: int = 0x10, polled: bool = True, alloc: int = 8):
    return (0x4A, 1 if polled else 0, 0, 0, cls, 0, 0, alloc >> 8, alloc & 0xFF, 0)


def test_gesn_steady_state(dev):
    data = ok(dev, *_gesn())
    assert len(data) == 8
    assert be(data[0:2]) == 6
    assert data[2] & 0x80 == 0 and data[2] & 0x07 == 4
    assert data[3] & 0x10
    assert data[4] & 0x0F == 0  # no change
    assert data[5] == 0x02  # media present, tray closed


def test_gesn_async_rejected(dev):
    assert check(dev, *_gesn(polled=False)).triple == "05/24/00"


def test_gesn_unsupported_class(dev):
    data = ok(dev, *_gesn(cls=0x02))
    assert be(data[0:2]) == 2 and data[2] & 0x80 and data[3] == 0x10


def test_gesn_empty_drive(empty_dev):
    assert ok(empty_dev, *_gesn())[4:6] == b"\x00\x00"


# ------------------------------------------------------- small MMC commands
def test_mechanism_status(dev):
    data = ok(dev, 0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0)
    assert len(data) == 8 and data[1] & 0x10 == 0 and data[5] == 0
    ok(dev, 0x1B, 0, 0, 0, 0x02, 0)
    assert ok(dev, 0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0)[1] & 0x10


def test_set_cd_speed_changes_current_speed(dev):
    ok(dev, 0xBB, 0, 0x02, 0xC2, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0)  # 706 kB/s (4x)
    page = ok(dev, 0x1A, 0x08, 0x2A, 0, 128, 0)[4:]
    assert be(page[14:16]) == 706


def test_get_performance(dev, iso):
    data = ok(dev, 0xAC, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0x00, 0)
    assert be(data[0:4]) == len(data) - 4 == 4 + 16
    assert be(data[8:12]) == 0 and be(data[16:20]) == iso.blocks - 1
    assert be(data[12:16]) > 0
    wr = ok(dev, 0xAC, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0x03, 0)
    assert be(wr[0:4]) == 4
    assert check(dev, 0xAC, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0x05, 0).triple == "05/24/00"


def test_read_subchannel(dev):
    assert ok(dev, 0x42, 0, 0x00, 1, 0, 0, 0, 0, 16, 0) == bytes((0, 0x15, 0, 0))
    pos = ok(dev, 0x42, 0, 0x40, 1, 0, 0, 0, 0, 16, 0)
    assert be(pos[2:4]) == 12 and pos[4] == 1 and pos[5] == 0x14
    mcn = ok(dev, 0x42, 0, 0x40, 2, 0, 0, 0, 0, 24, 0)
    assert len(mcn) == 24 and mcn[4] == 2 and not mcn[8] & 0x80
    isrc = ok(dev, 0x42, 0, 0x40, 3, 0, 0, 1, 0, 24, 0)
    assert len(isrc) == 24 and isrc[4] == 3 and isrc[6] == 1
    assert check(dev, 0x42, 0, 0x40, 3, 0, 0, 2, 0, 24, 0).triple == "05/24/00"
    assert check(dev, 0x42, 0, 0x40, 9, 0, 0, 0, 0, 24, 0).triple == "05/24/00"


def test_read_disc_structure_dvd():
    d = Device()
    d.state.medium = Medium.from_bytes(bytes(2048 * 32), kind=MediaKind.DVD_ROM)
    data = ok(d, 0xAD, 0, 0, 0, 0, 0, 0, 0x00, 0x08, 0x04, 0, 0)
    assert be(data[0:2]) == 2050 and len(data) == 2052
    assert data[4] >> 4 == 0  # DVD-ROM book type
    assert be(data[8:12]) == 0x030000 and be(data[12:16]) == 0x030000 + 31
    cp = ok(d, 0xAD, 0, 0, 0, 0, 0, 0, 0x01, 0, 8, 0, 0)
    assert be(cp[0:2]) == 6


def test_read_disc_structure_on_cd(dev):
    assert check(dev, 0xAD, 0, 0, 0, 0, 0, 0, 0x00, 0x08, 0x04, 0, 0).triple == "05/30/02"
    lst = ok(dev, 0xAD, 0, 0, 0, 0, 0, 0, 0xFF, 0, 64, 0, 0)
    assert be(lst[0:2]) == len(lst) - 2
