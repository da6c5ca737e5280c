"""Media changes: eject, tray lock, loading another disc, and what udev reports.

These are the paths a desktop exercises all day: the eject button (GESN eject
request), the kernel's own lock while a disc is in use, udev re-probing the
disc on every change. Each test puts cd1 back in drive 0 when it is done,
because every group after this one shares the guest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scsi_helpers import (
    CD2,
    checksum_mismatches,
    insert,
    mounted_checksums,
    restore_cd1,
    sg_raw,
    size64,
    tur,
    tur_until_good,
    wait_props,
)

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv


@pytest.fixture(autouse=True)
def _our_drive_model(cell: CellEnv) -> None:
    """These tests encode our responder's tray and disc-swap semantics; cdemu-daemon's
    differ (it closes the tray on open and refuses a load over a disc), so the
    cdemu stack needs its own expectations before these can judge it."""
    if cell.spec.responder != "ours":
        pytest.skip("tray/swap semantics are specified for our responder only (for now)")


@pytest.fixture
def restore(cell: CellEnv, drive: DriveNode) -> Iterator[DriveNode]:
    try:
        yield drive
    finally:
        restore_cd1(cell)


def test_eject_opens_the_tray(cell: CellEnv, restore: DriveNode) -> None:
    """``eject`` works on a udev-locked disc (the kernel unlocks), the tray opens."""
    res = cell.guest.run(["eject", restore.sr], timeout=120, check=False)
    assert res.rc == 0, f"eject failed: {res.stderr}"
    state = tur(cell.guest, restore.sg)
    assert state.sense is not None, f"TUR after eject: {state.describe()}"
    assert (state.sense.key, state.sense.asc) == (0x2, 0x3A), state.describe()
    if cell.spec.responder == "ours":
        assert state.sense.ascq == 0x02, f"tray open must be 3A/02: {state.describe()}"
    gesn = sg_raw(cell.guest, restore.sg, "4a 01 00 00 10 00 00 00 08 00", alloc=8)
    assert gesn.good and not gesn.data[5] & 0x02, f"media present after eject: {gesn.describe()}"


def test_open_closes_the_tray_again(cell: CellEnv, restore: DriveNode) -> None:
    """Linux's autoclose: opening an open-tray drive closes it on the disc left there."""
    assert cell.guest.run(["eject", restore.sr], timeout=120, check=False).rc == 0
    size, err = size64(cell.guest, restore.sr)
    assert size == cell.media["cd1"].size, f"after reopen: size {size} ({err})"


def test_removed_disc_gives_enomedium(cell: CellEnv, restore: DriveNode) -> None:
    assert cell.drive is not None
    cell.drive.eject(0)
    size, err = size64(cell.guest, restore.sr)
    assert size is None, f"blockdev found {size} bytes in an empty drive"
    assert "No medium found" in err, err
    props = wait_props(cell.guest, restore.sr, {"ID_CDROM_MEDIA": None}, timeout=15)
    assert props.get("ID_CDROM") == "1", props
    assert "ID_CDROM_MEDIA" not in props, f"udev still reports a disc: {props}"
    assert "ID_CDROM_MEDIA_CD" not in props, props


@pytest.mark.slow
def test_load_cd2_is_seen_with_its_files(cell: CellEnv, restore: DriveNode) -> None:
    """A disc swap: new size, new udev media properties, cd2's files on mount."""
    cd2 = cell.media["cd2"]
    insert(cell, CD2, cd2.size)
    want = {"ID_CDROM_MEDIA": "1", "ID_CDROM_MEDIA_CD": "1", "ID_FS_LABEL": cd2.label}
    props = wait_props(cell.guest, restore.sr, want, timeout=15)
    wrong = {k: props.get(k) for k, v in want.items() if props.get(k) != v}
    assert not wrong, f"udev after loading cd2: {wrong}"
    got = mounted_checksums(cell.guest, restore.sr, "iso9660", list(cd2.files))
    assert not checksum_mismatches(cd2.files, got), checksum_mismatches(cd2.files, got)


def test_udev_media_properties_with_cd1(cell: CellEnv, drive: DriveNode) -> None:
    props = wait_props(cell.guest, drive.sr, {"ID_CDROM_MEDIA_CD": "1"}, timeout=10)
    expected = {
        "ID_CDROM": "1",
        "ID_CDROM_MEDIA": "1",
        "ID_CDROM_MEDIA_CD": "1",
        "ID_CDROM_MEDIA_SESSION_COUNT": "1",
        "ID_CDROM_MEDIA_TRACK_COUNT": "1",
        "ID_CDROM_MEDIA_TRACK_COUNT_DATA": "1",
        "ID_FS_LABEL": cell.media["cd1"].label,
    }
    wrong = {k: props.get(k) for k, v in expected.items() if props.get(k) != v}
    assert not wrong, f"udev properties differ from {expected}: {wrong}"


def test_prevent_blocks_start_stop_eject(cell: CellEnv, restore: DriveNode) -> None:
    """PREVENT (sg_prevent) makes START STOP UNIT eject fail 02/53/02; ALLOW lets it."""
    sg = restore.sg
    assert cell.guest.run(["sg_prevent", "--prevent=1", sg], check=False).rc == 0
    refused = sg_raw(cell.guest, sg, "1b 00 00 00 02 00")
    assert refused.status == "Check Condition" and refused.sense is not None, refused.describe()
    assert (refused.sense.key, refused.sense.asc) == (0x2, 0x53), refused.describe()
    assert tur_until_good(cell.guest, sg).good, "disc gone after a refused eject"
    assert cell.guest.run(["sg_prevent", "--prevent=0", sg], check=False).rc == 0
    allowed = sg_raw(cell.guest, sg, "1b 00 00 00 02 00")
    assert allowed.good, allowed.describe()
    after = tur(cell.guest, sg)
    assert after.sense is not None and after.sense.asc == 0x3A, after.describe()
    closed = sg_raw(cell.guest, sg, "1b 00 00 00 03 00")  # LoEj + Start: close the tray
    assert closed.good, closed.describe()
    assert tur_until_good(cell.guest, sg).good, "disc not back after closing the tray"
