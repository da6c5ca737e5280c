"""Attach: opening /dev/vhba_ctl makes a SCSI CD-ROM appear, with sr and sg nodes."""

from __future__ import annotations

import pytest

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv
from lab.vm.guest import command_text


def test_drive_attached(cell: CellEnv) -> None:
    if cell.build is None or not cell.build.ok:
        pytest.skip("module did not build")
    assert cell.broken is None, cell.broken
    assert cell.nodes, "no drive"


def test_lsscsi_lists_a_cdrom(cell: CellEnv, drive: DriveNode) -> None:
    out = cell.guest.run(["lsscsi"]).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith(f"[{drive.hctl}]")), None)
    assert line is not None, out
    assert "cd/dvd" in line
    assert line.rstrip().endswith(drive.sr)


def test_sysfs_device_type_is_rom(cell: CellEnv, drive: DriveNode) -> None:
    sysfs = f"/sys/bus/scsi/devices/{drive.hctl}"
    both = command_text(["cat", f"{sysfs}/type", f"{sysfs}/removable"])
    out = cell.guest.sh(f"{both} 2>/dev/null || {command_text(['cat', f'{sysfs}/type'])}")
    assert out.stdout.split()[0] == "5", "peripheral device type must be 5 (CD/DVD)"
    removable = cell.guest.run(["cat", f"/sys/block/{drive.sr.split('/')[-1]}/removable"]).stdout
    assert removable.strip() == "1"


def test_nodes_are_block_and_char_devices(cell: CellEnv, drive: DriveNode) -> None:
    out = cell.guest.run(["stat", "-c", "%F", drive.sr, drive.sg]).stdout.splitlines()
    assert out == ["block special file", "character special file"]


def test_scsi_address_matches_ioctl_mapping(cell: CellEnv, drive: DriveNode) -> None:
    host, channel, target, lun = (int(x) for x in drive.hctl.split(":"))
    proc_name = cell.guest.run(["cat", f"/sys/class/scsi_host/host{host}/proc_name"])
    assert proc_name.stdout.strip() == "vhba"
    assert lun == 0 and 0 <= target < 15 and 0 <= channel < 16
