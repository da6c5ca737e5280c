"""Module lifecycle: vhba stays pinned while served, goes away cleanly after.

A module that unloads under an open fd crashes the kernel; one that stays
pinned after its last fd closed (or its responder died) cannot be upgraded
without a reboot. The harness's per-test dmesg check catches any warning.
"""

from __future__ import annotations

import pytest
from held_open import UNSAFE, HeldOpen, sr_uaf_reachable
from scsi_helpers import (
    restart_drive,
    rmmod_eventually,
    tur_until_good,
    wait_gone,
)

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv
from lab.cell.module import insert_module, module_loaded
from lab.errors import GuestCommandError


def test_rmmod_refused_while_served(cell: CellEnv, drive: DriveNode) -> None:
    res = cell.guest.run(["rmmod", "vhba"], check=False)
    try:
        assert res.rc != 0, "rmmod vhba succeeded with a responder attached"
        assert "in use" in res.stderr, res.stderr
        assert module_loaded(cell.guest)
        state = tur_until_good(cell.guest, drive.sg)
        assert state.good, f"drive broken by the refused rmmod: {state.describe()}"
    finally:
        if not module_loaded(cell.guest):
            restart_drive(cell)


@pytest.mark.slow
def test_stop_removes_device_then_rmmod_and_reload(cell: CellEnv, drive: DriveNode) -> None:
    assert cell.drive is not None
    try:
        cell.drive.stop()
        assert wait_gone(cell.guest, drive.hctl), f"{drive.hctl} outlived its responder"
        assert cell.guest.run(["test", "-e", drive.sr], check=False).rc != 0, (
            f"{drive.sr} still exists"
        )
        rc, err = rmmod_eventually(cell.guest)
        assert rc == 0, f"rmmod after stop: {err}"
        assert cell.guest.run(["test", "-e", "/dev/vhba_ctl"], check=False).rc != 0, (
            "/dev/vhba_ctl after rmmod"
        )
        try:
            insert_module(cell.guest)
        except GuestCommandError as exc:
            pytest.fail(f"insmod after rmmod: {exc}")
        restart_drive(cell)
        assert tur_until_good(cell.guest, cell.nodes[0].sg).good, "reloaded drive not ready"
        size = cell.guest.run(["blockdev", "--getsize64", cell.nodes[0].sr]).stdout.strip()
        assert size == str(cell.media["cd1"].size), size
    finally:
        restart_drive(cell)


@pytest.mark.slow
def test_sigkill_responder_removes_device(cell: CellEnv, drive: DriveNode) -> None:
    """An idle responder killed with SIGKILL: the kernel cleans up on close."""
    assert cell.drive is not None
    pids = cell.drive.pids()
    if not pids:
        pytest.fail("no responder process found")
    try:
        cell.guest.run(["kill", "-KILL", *pids])
        assert wait_gone(cell.guest, drive.hctl), f"{drive.hctl} outlived a killed responder"
        rc, err = rmmod_eventually(cell.guest)
        assert rc == 0, f"module pinned after its responder was killed: {err}"
    finally:
        restart_drive(cell)


@pytest.mark.slow
def test_a_drive_held_open_outlives_its_responder(cell: CellEnv, drive: DriveNode) -> None:
    """The responder goes while /dev/srN is held open (as udev's probes hold it); then the close.

    The module must let the device go with an opener left, and the close must
    be clean.  Seen on 6.16 in the matrix: udev-worker's close ran into sr's
    use-after-free (a general protection fault in
    scsi_block_when_processing_errors), a kernel bug (``held_open``): where
    it is reachable with this drive the test is skipped; the attacker's MRW
    drive shows the bug on KASAN kernels.
    """
    assert cell.drive is not None
    if sr_uaf_reachable(cell.guest, claims_mrw=False):
        pytest.skip(f"{UNSAFE}: attacker/test_an_mrw_drive_held_open_* shows it under KASAN")
    try:
        with HeldOpen(cell.guest, drive.sr) as holder:
            cell.drive.stop()
            assert wait_gone(cell.guest, drive.hctl, 30), f"{drive.hctl} outlived its responder"
            holder.close()
    finally:
        restart_drive(cell)
