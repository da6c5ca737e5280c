"""A CUE/BIN disc in the drive: TOC, track information, READ CD selections, Q, PLAY AUDIO.

Expected values are worked out by hand from the sheet below (LBA = frames
from the first track's INDEX 01; MSF = LBA + 150 frames) and from ECMA-130's
sector layout; the Q CRC is checked with :func:`binascii.crc_hqx`, an
implementation independent of the responder's.
"""

from __future__ import annotations

import binascii
import random
from pathlib import Path

import pytest
from _responder_helpers import be, check, ok

from vhba_responder.cdsector import SYNC, edc, mode1_sector
from vhba_responder.device import Device
from vhba_responder.media import Medium

DATA, AUDIO1, AUDIO2 = 300, 200, 100  # sectors; track 2 has a 2 s pregap in the file
PREGAP = 150


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def disc(tmp_path: Path) -> tuple[Device, bytes, bytes]:
    rnd = random.Random(7)
    data = rnd.randbytes(DATA * 2048)
    audio = rnd.randbytes((PREGAP + AUDIO1 + AUDIO2) * 2352)
    (tmp_path / "data.bin").write_bytes(data)
    (tmp_path / "audio.bin").write_bytes(audio)
    (tmp_path / "mixed.cue").write_text(
        'FILE "data.bin" BINARY\n  TRACK 01 MODE1/2048\n    INDEX 01 00:00:00\n'
        'FILE "audio.bin" BINARY\n  TRACK 02 AUDIO\n    INDEX 00 00:00:00\n'
        "    INDEX 01 00:02:00\n  TRACK 03 AUDIO\n    INDEX 01 00:04:50\n"
    )
    dev = Device()
    dev.state.medium = Medium.open(tmp_path / "mixed.cue")
    return dev, data, audio


T2_START = DATA + PREGAP  # 450
T3_START = T2_START + AUDIO1  # 650
LEADOUT = T3_START + AUDIO2  # 750


def _read_cd(lba: int, n: int, byte9: int, sector_type: int = 0, sub: int = 0) -> tuple:
    return (0xBE, sector_type << 2, *lba.to_bytes(4, "big"), *n.to_bytes(3, "big"), byte9, sub, 0)


def _toc(fmt: int, msf: bool = False, start: int = 0) -> tuple:
    return (0x43, 2 if msf else 0, fmt, 0, 0, 0, start, 0x03, 0x24, 0)


def test_the_sheet_gives_the_capacity_and_the_toc(disc) -> None:
    dev, _, _ = disc
    assert be(ok(dev, 0x25, *([0] * 9))[0:4]) == LEADOUT - 1
    toc = ok(dev, *_toc(0))
    assert toc[2:4] == bytes((1, 3)) and be(toc[0:2]) == 2 + 4 * 8
    entries = [toc[4 + 8 * i : 12 + 8 * i] for i in range(4)]
    assert [(e[1], e[2], be(e[4:8])) for e in entries] == [
        (0x14, 1, 0), (0x10, 2, T2_START), (0x10, 3, T3_START), (0x10, 0xAA, LEADOUT),
    ]  # fmt: skip
    msf = ok(dev, *_toc(0, msf=True, start=3))
    assert msf[4:12] == bytes((0, 0x10, 3, 0, 0, 0, 10, 50))  # 650 + 150 = 00:10:50
    assert check(dev, *_toc(0, start=4)).triple == "05/24/00"


def test_the_full_toc_has_a0_a1_a2_and_every_track(disc) -> None:
    dev, _, _ = disc
    full = ok(dev, *_toc(2, msf=True))
    points = {full[4 + 11 * i + 3]: full[4 + 11 * i : 15 + 11 * i] for i in range(6)}
    assert points[0xA0][1] == 0x14 and points[0xA0][8:11] == bytes((1, 0x00, 0))
    assert points[0xA1][1] == 0x10 and points[0xA1][8] == 3
    assert points[0xA2][8:11] == bytes((0, 12, 0))  # 750 + 150 = 900 frames = 00:12:00
    assert points[2][8:11] == bytes((0, 8, 0))  # 450 + 150 = 600 frames = 00:08:00


def test_track_and_disc_information(disc) -> None:
    dev, _, _ = disc
    info = ok(dev, 0x52, 1, 0, 0, 0, 2, 0, 0, 36, 0)
    assert (info[2], info[5] & 0x0F, info[6] & 0x0F) == (2, 0, 0x0F)
    assert (be(info[8:12]), be(info[24:28])) == (T2_START, AUDIO1)
    by_lba = ok(dev, 0x52, 0, *(T3_START + 5).to_bytes(4, "big"), 0, 0, 36, 0)
    assert by_lba[2] == 3
    data = ok(dev, 0x52, 1, 0, 0, 0, 1, 0, 0, 36, 0)
    assert (data[5] & 0x0F, data[6] & 0x0F, be(data[24:28])) == (4, 1, DATA)
    assert check(dev, 0x52, 1, 0, 0, 0, 4, 0, 0, 36, 0).triple == "05/24/00"
    disc_info = ok(dev, 0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0)
    assert (disc_info[3], disc_info[5], disc_info[6], disc_info[8]) == (1, 1, 3, 0x00)


def test_audio_sectors_read_as_stored_and_never_as_blocks(disc) -> None:
    dev, _, audio = disc
    got = ok(dev, *_read_cd(T2_START, 7, 0x10, sector_type=1))
    offset = (PREGAP) * 2352
    assert got == audio[offset : offset + 7 * 2352]
    assert ok(dev, *_read_cd(T2_START, 1, 0xF8)) == audio[offset : offset + 2352]
    assert ok(dev, *_read_cd(T2_START - 1, 1, 0x10)) == audio[offset - 2352 : offset]
    assert check(dev, *_read_cd(T2_START, 1, 0x10, sector_type=2)).triple == "05/64/00"
    assert check(dev, *_read_cd(0, 1, 0x10, sector_type=1)).triple == "05/64/00"
    assert check(dev, 0x28, 0, *T2_START.to_bytes(4, "big"), 0, 0, 1, 0).triple == "05/64/00"


def test_a_mode1_sector_field_by_field(disc) -> None:
    dev, data, _ = disc
    lba = 16
    raw = ok(dev, *_read_cd(lba, 1, 0xF8))
    user = data[lba * 2048 : (lba + 1) * 2048]
    assert raw == mode1_sector(lba, user) and len(raw) == 2352
    assert raw[:12] == SYNC and raw[12:16] == bytes((0x00, 0x02, 0x16, 0x01))  # BCD 00:02:16
    assert int.from_bytes(raw[2064:2068], "little") == edc(raw[:2064])
    assert raw[2068:2076] == bytes(8)
    assert ok(dev, *_read_cd(lba, 1, 0x20)) == raw[12:16]  # header only
    assert ok(dev, *_read_cd(lba, 1, 0x78)) == raw[12:]  # headers, user data, EDC/ECC
    assert ok(dev, *_read_cd(lba, 1, 0x18)) == raw[16:]
    assert ok(dev, *_read_cd(lba, 1, 0x12)) == user + bytes(294)  # C2 error bits
    assert ok(dev, *_read_cd(lba, 1, 0x14)) == user + bytes(296)  # and the block error byte
    assert ok(dev, *_read_cd(lba, 2, 0x10)) == data[lba * 2048 : (lba + 2) * 2048]


def _q_at(dev: Device, lba: int) -> bytes:
    got = ok(dev, *_read_cd(lba, 1, 0x00, sub=2))
    assert len(got) == 16 and got[12:] == bytes(4)
    q = got[:12]
    assert int.from_bytes(q[10:12], "big") == binascii.crc_hqx(q[:10], 0) ^ 0xFFFF
    return q[:10]


def test_formatted_q_names_track_index_and_times(disc) -> None:
    dev, _, _ = disc
    assert _q_at(dev, 16) == bytes((0x41, 0x01, 0x01, 0, 0, 0x16, 0, 0, 0x02, 0x16))
    # 2 sectors before track 2's INDEX 01: pregap, index 0, relative time counting down.
    assert _q_at(dev, T2_START - 2) == bytes((0x01, 0x02, 0x00, 0, 0, 0x02, 0, 0, 0x07, 0x73))
    # track 3, 80 sectors in (1 s 5 f); absolute 730 + 150 = 880 frames = 00:11:55
    assert _q_at(dev, T3_START + 80) == bytes((0x01, 0x03, 0x01, 0, 0x01, 0x05, 0, 0, 0x11, 0x55))


def test_raw_pw_interleaves_p_and_q(disc) -> None:
    dev, _, _ = disc
    for lba, pause in ((T2_START - 1, True), (T2_START, False)):
        got = ok(dev, *_read_cd(lba, 1, 0x10, sub=1))
        assert len(got) == 2352 + 96
        pw = got[2352:]
        assert all(bool(b & 0x80) is pause for b in pw), "P is set through the pregap"
        assert all(b & 0x3F == 0 for b in pw), "R-W are empty"
        q = bytes(sum(((pw[8 * i + j] >> 6) & 1) << (7 - j) for j in range(8)) for i in range(12))
        assert q[:10] == _q_at(dev, lba)
    assert ok(dev, *_read_cd(T2_START, 1, 0x00, sub=4)) == bytes(96)


def test_odd_sized_transfers_come_back_exact(disc) -> None:
    dev, _, audio = disc
    base = PREGAP * 2352
    for count in (1, 7, 26):
        got = ok(dev, *_read_cd(T2_START, count, 0x10, sector_type=1, sub=2))
        assert len(got) == count * (2352 + 16)
        for k in range(count):
            sector = got[k * 2368 : k * 2368 + 2352]
            assert sector == audio[base + k * 2352 : base + (k + 1) * 2352]


def _subq_position(dev: Device, msf: bool = False) -> bytes:
    return ok(dev, 0x42, 2 if msf else 0, 0x40, 0x01, 0, 0, 0, 0, 16, 0)


def test_play_audio_advances_pauses_resumes_and_completes(disc) -> None:
    dev, _, _ = disc
    clock = Clock()
    dev.state.audio.clock = clock
    assert _subq_position(dev)[1] == 0x15  # no audio status yet
    assert check(dev, 0x4B, 0, 0, 0, 0, 0, 0, 0, 0, 0).triple == "05/2C/00"  # nothing to pause
    ok(dev, 0x45, 0, *T2_START.to_bytes(4, "big"), 0, 0, 150, 0)  # PLAY AUDIO(10): 2 s
    clock.now += 1.0
    pos = _subq_position(dev)
    assert pos[1] == 0x11 and pos[6] == 2 and pos[7] == 1
    assert (be(pos[8:12]), be(pos[12:16])) == (T2_START + 75, 75)
    ok(dev, 0x4B, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # pause
    clock.now += 5.0
    paused = _subq_position(dev)
    assert paused[1] == 0x12 and be(paused[8:12]) == T2_START + 75
    ok(dev, 0x4B, 0, 0, 0, 0, 0, 0, 0, 1, 0)  # resume
    clock.now += 2.0
    done = _subq_position(dev)
    assert done[1] == 0x13 and be(done[8:12]) == T2_START + 149
    assert _subq_position(dev)[1] == 0x15, "a completion is reported once"


def test_play_audio_msf_and_its_refusals(disc) -> None:
    dev, _, _ = disc
    clock = Clock()
    dev.state.audio.clock = clock
    ok(dev, 0x47, 0, 0, 0, 10, 50, 0, 11, 0, 0)  # 00:10:50 .. 00:11:00 = track 3
    clock.now += 0.1
    pos = _subq_position(dev, msf=True)
    assert pos[6] == 3 and pos[8:12] == bytes((0, 0, 10, 57)) and pos[12:16] == bytes((0, 0, 0, 7))
    ok(dev, 0x4E, *([0] * 9))  # STOP PLAY/SCAN
    assert _subq_position(dev)[1] == 0x15
    assert check(dev, 0x47, 0, 0, 0, 2, 0, 0, 3, 0, 0).triple == "05/64/00"  # the data track
    assert check(dev, 0x47, 0, 0, 0, 11, 0, 0, 10, 0, 0).triple == "05/24/00"  # end < start
    assert check(dev, 0xA5, 0, *(LEADOUT - 1).to_bytes(4, "big"), 0, 0, 0, 9, 0, 0).triple == (
        "05/21/00"
    )


def test_get_configuration_lists_cd_audio_play(disc) -> None:
    dev, _, _ = disc
    conf = ok(dev, 0x46, 2, 0x01, 0x03, 0, 0, 0, 0, 64, 0)
    assert be(conf[8:10]) == 0x0103 and conf[10] & 1


def test_capabilities_claim_what_read_cd_and_play_audio_serve(disc) -> None:
    """CD Read's C2 flag and page 2A's CD-DA, C2 and audio play bits match the commands
    the drive answers (C2 pointers: all zero, an image has no read errors); CD-Text,
    SCAN and per-channel volume/mute are not modelled and stay unclaimed."""
    dev, _, _ = disc
    conf = ok(dev, 0x46, 2, 0x00, 0x1E, 0, 0, 0, 0, 64, 0)
    assert be(conf[8:10]) == 0x001E and conf[12] & 0x03 == 0x02  # C2 flags, no CD-Text
    play = ok(dev, 0x46, 2, 0x01, 0x03, 0, 0, 0, 0, 64, 0)
    assert play[12] & 0x07 == 0 and be(play[14:16]) == 256  # no SCAN/SCM/SV; 256 levels
    page = ok(dev, 0x1A, 0x08, 0x2A, 0, 128, 0)[4:]
    assert page[4] & 0x01, "audio play"
    assert page[5] & 0x13 == 0x13, "CD-DA commands, accurate CD-DA stream, C2 pointers"
    assert be(page[10:12]) == 256, "volume levels, as feature 0x0103 says"
