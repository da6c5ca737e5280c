"""MMC: the drive-description commands sr, cdrom and udev's cdrom_id parse.

Page 2A decides sr's capability mask (DVD, eject, lock, tray), GET
CONFIGURATION the current profile udev exports, READ TOC/DISC INFORMATION
the track and session counts, and GESN the media polling every 2 s.
"""

from __future__ import annotations

import pytest
from scsi_helpers import PROFILE_CD_ROM, parse_toc, sg_get_config, sg_raw

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv

# Feature codes (MMC-6 table 88).
PROFILE_LIST, CORE, REMOVABLE, RANDOM_READABLE, CD_READ, DVD_READ = 0, 1, 3, 0x10, 0x1E, 0x1F


def _page_2a(cell: CellEnv, drive: DriveNode, six: bool) -> bytes:
    """Page 2A from MODE SENSE(6) or (10), header and block descriptors stripped."""
    cdb = "1a 00 2a 00 ff 00" if six else "5a 00 2a 00 00 00 00 00 ff 00"
    res = sg_raw(cell.guest, drive.sg, cdb, alloc=255)
    assert res.good, res.describe()
    data = res.data
    if six:
        header, bd_len, total = 4, data[3], data[0] + 1
    else:
        header, bd_len, total = (
            8,
            int.from_bytes(data[6:8], "big"),
            (int.from_bytes(data[0:2], "big") + 2),
        )
    assert total <= len(data), f"mode data length {total} > {len(data)} bytes received"
    page = data[header + bd_len : total]
    assert page and page[0] & 0x3F == 0x2A, f"no page 2A in {data.hex()}"
    assert page[1] + 2 <= len(page), f"page length {page[1]} overruns: {page.hex()}"
    assert page[1] >= 0x12, f"page 2A length {page[1]}: sr needs at least bytes 0..19"
    return page


@pytest.mark.parametrize("six", [True, False], ids=["mode_sense_6", "mode_sense_10"])
def test_mode_page_2a_capabilities(cell: CellEnv, drive: DriveNode, six: bool) -> None:
    """Bits sr's get_capabilities reads: DVD-ROM read, eject, lock, tray loader."""
    page = _page_2a(cell, drive, six)
    problems = []
    if not page[2] & 0x08:
        problems.append("byte 2 bit 3 (DVD-ROM read) clear")
    if not page[6] & 0x08:
        problems.append("byte 6 bit 3 (eject) clear")
    if not page[6] & 0x01:
        problems.append("byte 6 bit 0 (lock) clear")
    if page[6] >> 5 != 1:
        problems.append(f"loading mechanism {page[6] >> 5}, expected 1 (tray)")
    assert not problems, f"{'; '.join(problems)}: page {page.hex()}"


def test_sg_modes_decodes_page_2a(cell: CellEnv, drive: DriveNode) -> None:
    out = cell.guest.run(["sg_modes", "-p", "0x2a", drive.sg], check=False).stdout
    assert "MM capabilities and mechanical status" in out, out


def test_mode_page_2a_lock_state_follows_prevent(cell: CellEnv, drive: DriveNode) -> None:
    """Byte 6 bit 1 (lock state) reports PREVENT ALLOW MEDIUM REMOVAL."""
    before = _page_2a(cell, drive, six=True)[6] & 0x02
    try:
        assert sg_raw(cell.guest, drive.sg, "1e 00 00 00 01 00").good
        locked = _page_2a(cell, drive, six=True)[6] & 0x02
        assert sg_raw(cell.guest, drive.sg, "1e 00 00 00 00 00").good
        unlocked = _page_2a(cell, drive, six=True)[6] & 0x02
    finally:
        sg_raw(cell.guest, drive.sg, f"1e 00 00 00 {int(bool(before)):02x} 00")
    assert locked and not unlocked, f"lock state bit: prevented={locked} allowed={unlocked}"


def test_get_configuration_cd1_is_cd_rom(cell: CellEnv, drive: DriveNode) -> None:
    config = sg_get_config(cell.guest, drive.sg)
    assert config.current_profile == "CD-ROM", config.text
    res = sg_raw(cell.guest, drive.sg, "46 00 00 00 00 00 00 00 08 00", alloc=8)
    assert res.good, res.describe()
    assert int.from_bytes(res.data[6:8], "big") == PROFILE_CD_ROM, res.data.hex()


def test_get_configuration_feature_list(cell: CellEnv, drive: DriveNode) -> None:
    """RT=0: every feature, current or not; the ones cdrom_id and sr rely on are there."""
    config = sg_get_config(cell.guest, drive.sg)
    missing = {PROFILE_LIST, CORE, REMOVABLE, RANDOM_READABLE, CD_READ} - set(config.features)
    assert not missing, f"features missing: {sorted(hex(m) for m in missing)}\n{config.text}"
    for code in (PROFILE_LIST, CORE, REMOVABLE, RANDOM_READABLE, CD_READ):
        assert config.features[code], f"feature {code:#x} not current with a CD loaded"
    assert config.profiles.get("CD-ROM") is True, config.profiles
    if cell.spec.responder == "ours":
        assert config.profiles.get("DVD-ROM") is False, config.profiles
        assert config.features.get(DVD_READ) is False, "DVD Read must be listed, not current"
    codes = list(config.features)
    assert codes == sorted(codes), f"features not in ascending order: {[hex(c) for c in codes]}"


def test_get_configuration_rt1_only_current(cell: CellEnv, drive: DriveNode) -> None:
    config = sg_get_config(cell.guest, drive.sg, "--rt=1")
    assert config.features, config.text
    not_current = [hex(c) for c, cur in config.features.items() if not cur]
    assert not not_current, f"RT=1 returned non-current features {not_current}"
    assert DVD_READ not in config.features, "RT=1 with a CD returned DVD Read"
    assert CD_READ in config.features, config.text


def test_get_configuration_rt2_one_feature(cell: CellEnv, drive: DriveNode) -> None:
    config = sg_get_config(cell.guest, drive.sg, "--rt=2", "--starting=0x1e")
    assert list(config.features) == [CD_READ], config.text
    core = sg_get_config(cell.guest, drive.sg, "--rt=2", "--starting=1")
    assert list(core.features) == [CORE], core.text


@pytest.mark.parametrize("msf", [False, True], ids=["lba", "msf"])
def test_read_toc_format0(cell: CellEnv, drive: DriveNode, msf: bool) -> None:
    """One Mode 1 data track at LBA 0, lead-out at the ISO's block count."""
    cdb = f"43 {0x02 if msf else 0:02x} 00 00 00 00 01 03 24 00"
    res = sg_raw(cell.guest, drive.sg, cdb, alloc=0x324)
    assert res.good, res.describe()
    first, last, entries = parse_toc(res.data, msf)
    assert (first, last) == (1, 1), res.data.hex()
    assert [e.track for e in entries] == [1, 0xAA], entries
    track, lead_out = entries
    assert track.is_data and track.address == 0, track
    assert track.adr_ctrl >> 4 == 1, f"ADR {track.adr_ctrl >> 4}, expected 1 (Q position)"
    assert lead_out.address == cell.media["cd1"].size // 2048, lead_out


@pytest.mark.parametrize("msf", [False, True], ids=["lba", "msf"])
def test_read_toc_format1_session_info(cell: CellEnv, drive: DriveNode, msf: bool) -> None:
    cdb = f"43 {0x02 if msf else 0:02x} 01 00 00 00 00 00 0c 00"
    res = sg_raw(cell.guest, drive.sg, cdb, alloc=12)
    assert res.good, res.describe()
    first, last, entries = parse_toc(res.data, msf)
    assert (first, last) == (1, 1), f"first/last session {first}/{last}: {res.data.hex()}"
    assert len(entries) == 1 and entries[0].track == 1 and entries[0].address == 0, entries


def test_read_disc_information(cell: CellEnv, drive: DriveNode) -> None:
    """Complete disc, last session complete, one session, one track."""
    res = sg_raw(cell.guest, drive.sg, "51 00 00 00 00 00 00 00 22 00", alloc=34)
    assert res.good, res.describe()
    d = res.data
    assert int.from_bytes(d[0:2], "big") >= 0x20, d.hex()
    assert d[2] & 0x03 == 2, f"disc status {d[2] & 3}, expected 2 (complete)"
    assert (d[2] >> 2) & 0x03 == 3, f"last session state {(d[2] >> 2) & 3}, expected 3"
    assert not d[2] & 0x10, "a pressed disc is not erasable"
    sessions = d[9] << 8 | d[4]
    first_in_last, last_in_last = d[10] << 8 | d[5], d[11] << 8 | d[6]
    assert sessions == 1, f"{sessions} sessions"
    assert last_in_last - first_in_last + 1 == 1, f"tracks {first_in_last}..{last_in_last}"


def test_gesn_media_polled(cell: CellEnv, drive: DriveNode) -> None:
    """What sr_check_events sends every 2 s: class 4 (media), media present."""
    res = sg_raw(cell.guest, drive.sg, "4a 01 00 00 10 00 00 00 08 00", alloc=8)
    assert res.good, res.describe()
    d = res.data
    assert len(d) == 8, d.hex()
    assert int.from_bytes(d[0:2], "big") >= 4, d.hex()
    assert not d[2] & 0x80, "NEA set: the drive claims no media class events"
    assert d[2] & 0x07 == 4, f"notification class {d[2] & 7}, expected 4 (media)"
    assert d[3] & 0x10, f"supported classes {d[3]:#04x} lack media (bit 4)"
    assert d[5] & 0x02, f"media status {d[5]:#04x}: media present bit clear with cd1 loaded"
    assert not d[5] & 0x01, "door open bit set with the tray closed"


def test_gesn_asynchronous_is_rejected(cell: CellEnv, drive: DriveNode) -> None:
    """Polled=0 asks for asynchronous notification, which no SCSI CD drive offers."""
    res = sg_raw(cell.guest, drive.sg, "4a 00 00 00 10 00 00 00 08 00", alloc=8)
    assert res.status == "Check Condition" and res.sense is not None, res.describe()
    assert (res.sense.key, res.sense.asc) == (5, 0x24), res.describe()
