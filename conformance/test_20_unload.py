"""Last in every cell: the drive stops and the module unloads after all the suite did.

It runs after every other group, so the health check around it judges the
last group's teardown (read with this test's start marker) and the module's
exit after a cell's worth of drives, discs, errors and hostile responders: a
warning in the host's removal, a slab cache destroyed with objects still in
it, a work item left queued, or (on a debug kernel) a leak kmemleak finds in
the scan after it, all show up here, where no later test hides them.
"""

from __future__ import annotations

from scsi_helpers import rmmod_eventually, wait_gone

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv


def test_the_drive_stops_and_the_module_unloads(cell: CellEnv, drive: DriveNode) -> None:
    assert cell.drive is not None
    cell.drive.stop()
    assert wait_gone(cell.guest, drive.hctl), f"{drive.hctl} outlived its responder"
    rc, err = rmmod_eventually(cell.guest)
    assert rc == 0, f"the module stayed pinned after its last drive stopped: {err}"
    gone = cell.guest.run(["test", "-e", "/dev/vhba_ctl"], check=False).rc != 0
    assert gone, "/dev/vhba_ctl outlived the module"
