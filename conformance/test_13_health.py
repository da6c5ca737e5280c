"""Whole-run health, checked after the groups that stress the drive.

The per-test check only sees each test's own dmesg slice; a GESN/TUR
disagreement builds up over many polls and is logged once, so it is looked
for in the whole log here.
"""

from __future__ import annotations

import re

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv
from lab.cell.health import EXPECTED_TAINT


def test_no_gesn_tur_disagreement(cell: CellEnv, drive: DriveNode) -> None:
    dmesg = cell.guest.run(["dmesg"], timeout=60).stdout
    bad = [line for line in dmesg.splitlines() if "GET_EVENT and TUR disagree" in line]
    assert not bad, "\n".join(bad)


def test_no_unexpected_taint(cell: CellEnv, drive: DriveNode) -> None:
    """Taint no test's own health check caught (e.g. around a test without one).

    Bits a test's verdict already named stay that test's: a kernel bug's
    KASAN report (taint B) is judged once, where it happened.
    """
    taint = cell.health.taint()
    unexplained = taint & ~EXPECTED_TAINT & ~cell.health.attributed_taint
    assert unexplained == 0, (
        f"tainted={taint:#x}: bits {unexplained:#x} beyond O/E (out-of-tree, unsigned)"
        f" that no test's health check named"
    )


def test_no_scsi_errors_logged_for_our_drive(cell: CellEnv, drive: DriveNode) -> None:
    """sr logs "Unhandled sense"/"I/O error" for failures nobody asked for."""
    dmesg = cell.guest.run(["dmesg"], timeout=60).stdout
    name = drive.sr.rsplit("/", 1)[1]
    bad = [
        line
        for line in dmesg.splitlines()
        if f"[{name}]" in line and re.search(r"timing out|abort|reset", line, re.IGNORECASE)
    ]
    assert not bad, "\n".join(bad[:10])


def test_responder_still_running(cell: CellEnv, drive: DriveNode) -> None:
    assert cell.drive is not None and cell.drive.running(), "the responder is gone"
