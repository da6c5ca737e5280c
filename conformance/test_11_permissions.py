"""Who may open /dev/vhba_ctl: the shipped udev rule grants group cdrom only.

Opening the control device creates SCSI devices, so it must never be
world-accessible; and the responder must work unprivileged once allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scsi_helpers import CD1, restart_drive, tur_until_good

from lab.cellenv import CellEnv
from lab.drives import GUEST_PYZ, LOGS, STATE, DriveNode, OurResponder

RULE = Path(__file__).resolve().parents[1] / "module" / "udev" / "61-vhba-cdrom-group.rules"
GUEST_RULE = "/etc/udev/rules.d/61-vhba-cdrom-group.rules"
# os.open, not open(): Python's buffered "r+b" mode also demands a seekable
# file, and upstream vhba's control node is not (no permission problem).
OPEN = 'python3 -c \'import os; os.close(os.open("/dev/vhba_ctl", os.O_RDWR)); print("opened")\''


def _retrigger(cell: CellEnv) -> None:
    cell.guest.run(
        "udevadm control --reload && "
        "udevadm trigger --action=change --sysname-match=vhba_ctl && udevadm settle -t 20",
        timeout=60,
        check=True,
    )


def _ctl_owner(cell: CellEnv) -> str:
    return cell.guest.run("stat -c '%U:%G %a' /dev/vhba_ctl", check=True).stdout.strip()


def test_without_rule_ctl_is_root_only(cell: CellEnv, drive: DriveNode) -> None:
    """The module's default node: root only (no world access, no cdrom group)."""
    owner, mode = _ctl_owner(cell).split()
    assert owner == "root:root" and not int(mode, 8) & 0o007, f"/dev/vhba_ctl is {owner} {mode}"
    res = cell.guest.run(f"runuser -u outsider -- {OPEN}")
    assert res.rc != 0, "an unprivileged user opened /dev/vhba_ctl without any rule"


@pytest.fixture
def cdrom_rule(cell: CellEnv, drive: DriveNode) -> Iterator[None]:
    """The shipped rule installed and applied; removed (and the node reset) afterwards."""
    owner, mode = _ctl_owner(cell).split()
    cell.guest.upload(RULE, GUEST_RULE)
    try:
        _retrigger(cell)
        yield
    finally:
        cell.guest.run(f"rm -f {GUEST_RULE}")
        _retrigger(cell)
        # udev never resets a node's owner when a rule goes away: do it by hand.
        cell.guest.run(f"chown {owner} /dev/vhba_ctl && chmod {mode} /dev/vhba_ctl", check=True)


def test_rule_sets_group_cdrom_0660(cell: CellEnv, cdrom_rule: None) -> None:
    out = cell.guest.run("stat -c '%G %a' /dev/vhba_ctl", check=True).stdout.split()
    assert out == ["cdrom", "660"], out


def test_cdrom_member_can_open(cell: CellEnv, cdrom_rule: None) -> None:
    res = cell.guest.run(f"runuser -u labuser -- {OPEN}")
    assert res.rc == 0 and "opened" in res.stdout, res.stderr


def test_outsider_cannot_open(cell: CellEnv, cdrom_rule: None) -> None:
    res = cell.guest.run(f"runuser -u outsider -- {OPEN}")
    assert res.rc != 0, "user outside group cdrom opened /dev/vhba_ctl"
    assert "PermissionError" in res.stderr, res.stderr


def test_responder_runs_as_cdrom_member(cell: CellEnv, cdrom_rule: None) -> None:
    if cell.spec.responder != "ours":
        pytest.skip("runs our responder as labuser (the cell uses cdemu-daemon)")
    assert cell.drive is not None
    cell.drive.stop()
    user_drive = OurResponder(cell.guest, user="labuser")
    try:
        nodes = user_drive.start([CD1])
        assert len(nodes) == 1
        owner = cell.guest.run(f"pgrep -u labuser -f '{GUEST_PYZ} serve'")
        assert owner.rc == 0, "the responder does not run as labuser"
        assert tur_until_good(cell.guest, nodes[0].sg).good
        size = cell.guest.run(f"blockdev --getsize64 {nodes[0].sr}").stdout.strip()
        assert size == str(cell.media["cd1"].size), size
    finally:
        user_drive.stop()
        cell.guest.run(f"chown -R root {LOGS} {STATE}")
        restart_drive(cell)
