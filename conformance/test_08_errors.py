"""Error paths: what the drive says (sense) and what Linux makes of it (errno).

A drive that answers an unknown opcode with GOOD, or an out-of-range read
without 21/00, makes Linux read garbage or retry forever; a missing 3A on an
empty drive makes it believe a disc is there.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scsi_helpers import restore_cd1, sg_raw

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv
from lab.vm.guest import command_text


class TestEmptyDrive:
    """An empty drive, emptied once for the class: a disc change each way costs ~20 s."""

    @pytest.fixture(scope="class")
    def empty(self, cell: CellEnv) -> Iterator[DriveNode]:
        """Drive 0 with its disc taken out by the operator; cd1 is put back afterwards."""
        if cell.drive is None or not cell.nodes:
            pytest.skip(f"cell broken: {cell.broken}")
        sr = cell.nodes[0].sr
        cell.guest.sh(f"{command_text(['eject', '-i', 'off', sr])} >/dev/null 2>&1", check=False)
        try:
            cell.drive.eject(0)
            # The kernel autocloses the open tray on the next open: an empty, closed drive.
            cell.guest.run(["blockdev", "--getsize64", sr], check=False)
            yield cell.nodes[0]
        finally:
            restore_cd1(cell)

    @pytest.fixture
    def empty_drive(self, drive: DriveNode, empty: DriveNode) -> DriveNode:
        """The emptied drive, behind the per-test ``drive`` fixture's checks."""
        return empty

    def test_no_medium_read_fails_with_enomedium(
        self, cell: CellEnv, empty_drive: DriveNode
    ) -> None:
        res = cell.guest.run(
            ["dd", f"if={empty_drive.sr}", "of=/dev/null", "bs=2048", "count=1"],
            timeout=120,
            check=False,
        )
        assert res.rc != 0, "dd read a disc from an empty drive"
        assert "No medium found" in res.stderr, res.stderr

    def test_read_capacity_on_empty_drive_is_not_ready_3a(
        self, cell: CellEnv, empty_drive: DriveNode
    ) -> None:
        res = sg_raw(cell.guest, empty_drive.sg, "25 00 00 00 00 00 00 00 00 00", alloc=8)
        if res.sense is not None and res.sense.key == 6:  # the removal's unit attention, if any
            res = sg_raw(cell.guest, empty_drive.sg, "25 00 00 00 00 00 00 00 00 00", alloc=8)
        assert res.status == "Check Condition" and res.sense is not None, res.describe()
        assert (res.sense.key, res.sense.asc) == (0x2, 0x3A), res.describe()

    def test_tur_on_empty_drive_is_not_ready_3a(
        self, cell: CellEnv, empty_drive: DriveNode
    ) -> None:
        res = sg_raw(cell.guest, empty_drive.sg, "00 00 00 00 00 00")
        assert res.status == "Check Condition" and res.sense is not None, res.describe()
        assert (res.sense.key, res.sense.asc) == (0x2, 0x3A), res.describe()
        assert res.rc != 0, "sg_raw exit status 0 for a CHECK CONDITION"


def test_unknown_opcode_is_invalid_command(cell: CellEnv, drive: DriveNode) -> None:
    res = sg_raw(cell.guest, drive.sg, "ff 00 00 00 00 00")
    assert res.status == "Check Condition", res.describe()
    assert res.sense is not None and res.sense.triple == "05/20/00", res.describe()


def test_read10_past_the_end_is_lba_out_of_range(cell: CellEnv, drive: DriveNode) -> None:
    blocks = cell.media["cd1"].size // 2048
    lba = blocks.to_bytes(4, "big").hex(" ")
    res = sg_raw(cell.guest, drive.sg, f"28 00 {lba} 00 00 01 00", alloc=2048)
    assert res.status == "Check Condition", res.describe()
    assert res.sense is not None and res.sense.triple == "05/21/00", res.describe()
    assert res.data == b"", "data returned with a CHECK CONDITION"


def test_read10_straddling_the_end_is_lba_out_of_range(cell: CellEnv, drive: DriveNode) -> None:
    """Last block plus one more: the whole command fails, nothing is read past the end."""
    blocks = cell.media["cd1"].size // 2048
    lba = (blocks - 1).to_bytes(4, "big").hex(" ")
    res = sg_raw(cell.guest, drive.sg, f"28 00 {lba} 00 00 02 00", alloc=4096)
    assert res.sense is not None and res.sense.triple == "05/21/00", res.describe()


def test_last_block_is_readable(cell: CellEnv, drive: DriveNode) -> None:
    blocks = cell.media["cd1"].size // 2048
    lba = (blocks - 1).to_bytes(4, "big").hex(" ")
    res = sg_raw(cell.guest, drive.sg, f"28 00 {lba} 00 00 01 00", alloc=2048)
    assert res.good and len(res.data) == 2048, res.describe()


def test_invalid_field_in_cdb(cell: CellEnv, drive: DriveNode) -> None:
    """READ TOC format 0x0F does not exist: 05/24/00, not GOOD and not 20/00."""
    res = sg_raw(cell.guest, drive.sg, "43 00 0f 00 00 00 00 00 0c 00", alloc=12)
    assert res.sense is not None and res.sense.triple == "05/24/00", res.describe()


def test_read_via_sr_past_the_end_fails(cell: CellEnv, drive: DriveNode) -> None:
    """dd beyond the device's end reads nothing and leaves the drive usable."""
    blocks = cell.media["cd1"].size // 2048
    past = command_text(
        ["dd", f"if={drive.sr}", "of=/dev/null", "bs=2048", f"skip={blocks}", "count=1",
         "iflag=direct"]
    )  # fmt: skip
    res = cell.guest.sh(f"{past} 2>&1", check=False)
    assert "0+0 records in" in res.stdout, res.stdout
    ok = cell.guest.run(
        ["dd", f"if={drive.sr}", "of=/dev/null", "bs=2048", "count=1", "iflag=direct"],
        check=False,
    )
    assert ok.rc == 0, ok.stderr
