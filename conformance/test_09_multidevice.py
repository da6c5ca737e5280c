"""Sixteen drives from one responder: distinct addresses, nodes and data paths.

vhba hands out one SCSI target per open of /dev/vhba_ctl; a bookkeeping bug
(shared tag space, wrong device number, a request answered on the wrong fd)
shows up as duplicate nodes or one drive returning another's data.
"""

from __future__ import annotations

import hashlib

import pytest
from scsi_helpers import CD1, restart_drive, wait_size

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv
from lab.vm.guest import command_text

COUNT = 16
HEAD = 64 * 1024
# Sixteen drives coming or going, each probed by udev: 30 s was too short on 6.16 under TCG.
RESTART_S = 180.0


@pytest.mark.slow
def test_sixteen_drives(cell: CellEnv, drive: DriveNode) -> None:
    with cell.media["cd1"].path.open("rb") as fh:
        expected = hashlib.sha256(fh.read(HEAD)).hexdigest()
    try:
        restart_drive(cell, [CD1] * COUNT, timeout=RESTART_S)
        nodes = cell.nodes
        assert len(nodes) == COUNT, f"{len(nodes)} drives attached, expected {COUNT}"
        for attr in ("hctl", "sr", "sg"):
            values = [getattr(n, attr) for n in nodes]
            assert len(set(values)) == COUNT, f"duplicate {attr}: {values}"
        # cdemu-daemon creates its drives empty and loads afterwards, so Linux
        # learns each disc from its media poll: wait until every size is known.
        size = cell.media["cd1"].size
        unsized = {n.sr: seen for n in nodes if (seen := wait_size(cell.guest, n.sr, size)) != size}
        assert not unsized, f"drives without cd1's size {size} after loading: {unsized}"
        dd = [f"bs={HEAD}", "count=1", "iflag=direct", "status=none"]
        script = "; ".join(
            f"echo {command_text([n.sr])} $({command_text(['dd', f'if={n.sr}', *dd])} | sha256sum)"
            for n in nodes
        )
        out = cell.guest.sh(script, timeout=600).stdout
        got = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
        wrong = {sr: digest for sr, digest in got.items() if digest != expected}
        assert len(got) == COUNT and not wrong, f"first 64 KiB differ from cd1's: {wrong}"
        lsscsi = cell.guest.run(["lsscsi"]).stdout
        listed = sum(1 for n in nodes if f"[{n.hctl}]" in lsscsi)
        assert listed == COUNT, f"lsscsi lists {listed} of {COUNT}:\n{lsscsi}"
    finally:
        restart_drive(cell, [CD1], timeout=RESTART_S)


def test_back_to_one_drive(cell: CellEnv, drive: DriveNode) -> None:
    """After the 16-drive run the cell serves exactly one drive again."""
    assert len(cell.nodes) == 1, cell.nodes
    listing = "ls -d /sys/devices/platform/vhba/host*/target*/*:*:*:*"  # a glob: shell text
    devices = cell.guest.sh(listing, check=False).stdout
    assert len(devices.split()) == 1, f"vhba still has these SCSI devices: {devices}"
