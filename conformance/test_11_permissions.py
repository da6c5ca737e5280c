"""Who may open /dev/vhba_ctl: the shipped udev rule grants group cdrom only.

Opening the control device creates SCSI devices, so it must never be
world-accessible; and the responder must work unprivileged once allowed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scsi_helpers import CD1, restart_drive, tur_until_good

from lab.cell.drives import GUEST_RESPONDER, LOGS, STATE, DriveNode, OurResponder, find_nodes
from lab.cell.env import CellEnv
from lab.vm.guest import command_text

RULE = Path(__file__).resolve().parents[1] / "module" / "udev" / "61-vhba-cdrom-group.rules"
GUEST_RULE = "/etc/udev/rules.d/61-vhba-cdrom-group.rules"
# os.open, not open(): Python's buffered "r+b" mode also demands a seekable
# file, and upstream vhba's control node is not (no permission problem).
OPEN = [
    "python3",
    "-c",
    'import os; os.close(os.open("/dev/vhba_ctl", os.O_RDWR)); print("opened")',
]


def _retrigger(cell: CellEnv) -> None:
    cell.guest.sh(
        "udevadm control --reload && "
        "udevadm trigger --action=change --sysname-match=vhba_ctl && udevadm settle -t 20",
        timeout=60,
    )


def _ctl_owner(cell: CellEnv) -> str:
    return cell.guest.run(["stat", "-c", "%U:%G %a", "/dev/vhba_ctl"]).stdout.strip()


def test_without_rule_ctl_is_root_only(cell: CellEnv, drive: DriveNode) -> None:
    """The module's default node: root only (no world access, no cdrom group)."""
    owner, mode = _ctl_owner(cell).split()
    assert owner == "root:root" and not int(mode, 8) & 0o007, f"/dev/vhba_ctl is {owner} {mode}"
    res = cell.guest.run(["runuser", "-u", "outsider", "--", *OPEN], check=False)
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
        cell.guest.run(["rm", "-f", GUEST_RULE], check=False)
        _retrigger(cell)
        # udev never resets a node's owner when a rule goes away: do it by hand.
        cell.guest.sh(
            f"{command_text(['chown', owner, '/dev/vhba_ctl'])} && "
            f"{command_text(['chmod', mode, '/dev/vhba_ctl'])}"
        )


def test_rule_sets_group_cdrom_0660(cell: CellEnv, cdrom_rule: None) -> None:
    out = cell.guest.run(["stat", "-c", "%G %a", "/dev/vhba_ctl"]).stdout.split()
    assert out == ["cdrom", "660"], out


def test_cdrom_member_can_open(cell: CellEnv, cdrom_rule: None) -> None:
    res = cell.guest.run(["runuser", "-u", "labuser", "--", *OPEN], check=False)
    assert res.rc == 0 and "opened" in res.stdout, res.stderr


def test_outsider_cannot_open(cell: CellEnv, cdrom_rule: None) -> None:
    res = cell.guest.run(["runuser", "-u", "outsider", "--", *OPEN], check=False)
    assert res.rc != 0, "user outside group cdrom opened /dev/vhba_ctl"
    assert "PermissionError" in res.stderr, res.stderr


@pytest.mark.slow
def test_responder_runs_as_cdrom_member(cell: CellEnv, cdrom_rule: None) -> None:
    if cell.spec.responder != "ours":
        pytest.skip("runs our responder as labuser (the cell uses cdemu-daemon)")
    assert cell.drive is not None
    cell.drive.stop()
    user_drive = OurResponder(cell.guest, user="labuser")
    try:
        nodes = user_drive.start([CD1])
        assert len(nodes) == 1
        owner = cell.guest.run(
            ["pgrep", "-u", "labuser", "-f", f"{GUEST_RESPONDER} serve"], check=False
        )
        assert owner.rc == 0, "the responder does not run as labuser"
        assert tur_until_good(cell.guest, nodes[0].sg).good
        size = cell.guest.run(["blockdev", "--getsize64", nodes[0].sr]).stdout.strip()
        assert size == str(cell.media["cd1"].size), size
    finally:
        user_drive.stop()
        cell.guest.run(["chown", "-R", "root", LOGS, STATE], check=False)
        restart_drive(cell)


PACKAGING = Path(__file__).resolve().parents[1] / "packaging"
SERVICE = "vhba-responder.service"


@pytest.mark.slow
def test_the_packaged_service_serves_a_drive_as_an_unprivileged_cdrom_member(
    cell: CellEnv, cdrom_rule: None
) -> None:
    """packaging/: the systemd unit, sysusers and tmpfiles snippets, as a package installs them."""
    if cell.spec.responder != "ours":
        pytest.skip("the service runs our responder (the cell tests cdemu-daemon)")
    guest = cell.guest
    installed = {
        f"/etc/systemd/system/{SERVICE}": PACKAGING / SERVICE,
        "/etc/sysusers.d/vhba-responder.conf": PACKAGING / "vhba-responder.sysusers.conf",
        "/etc/tmpfiles.d/vhba-responder.conf": PACKAGING / "vhba-responder.tmpfiles.conf",
    }
    guest.run(["mkdir", "-p", "/etc/sysusers.d", "/etc/tmpfiles.d"])
    for remote, local in installed.items():
        guest.upload(local, remote)
    # A package installs the command as /usr/bin/vhba-responder; the guest has the unpacked zipapp.
    guest.write_text("/usr/bin/vhba-responder", f'#!/bin/sh\nexec python3 {GUEST_RESPONDER} "$@"\n')
    try:
        guest.sh(
            "chmod 755 /usr/bin/vhba-responder && systemd-sysusers && "
            "systemd-tmpfiles --create /etc/tmpfiles.d/vhba-responder.conf && "
            f"systemctl daemon-reload && {command_text(['systemctl', 'start', SERVICE])}",
            timeout=120,
        )  # fmt: skip
        status = None
        for _ in range(100):  # the drive's first status answer (polled from the host)
            res = guest.run(["vhba-responder", "ctl", "status"], timeout=60, check=False)
            if res.rc == 0:
                status = json.loads(res.stdout)
                break
            time.sleep(0.3)
        journal = command_text(["journalctl", "-u", SERVICE])
        assert status is not None, guest.sh(f"{journal} | tail -20", check=False).stdout
        pid = guest.run(["systemctl", "show", "-p", "MainPID", "--value", SERVICE]).stdout.strip()
        who = guest.run(["ps", "-o", "user:32=,group:32=", "-p", pid]).stdout.split()
        assert who == ["vhba-responder", "cdrom"], who
        # A member of group cdrom (not root) loads a disc through the service's socket.
        sock = guest.run(["stat", "-c", "%U:%G %a", "/run/vhba-responder/control"]).stdout
        assert sock.split()[0] == "vhba-responder:cdrom", sock
        load = guest.run(
            ["runuser", "-u", "labuser", "--", "vhba-responder", "ctl", "load", "0", CD1],
            timeout=60,
            check=False,
        )
        assert load.rc == 0, load.stdout + load.stderr
        node = find_nodes(guest, status["devices"][0]["hctl"])
        assert tur_until_good(guest, node.sg).good
        size = guest.run(["blockdev", "--getsize64", node.sr]).stdout.strip()
        assert size == str(cell.media["cd1"].size), size
    finally:
        stop = command_text(["systemctl", "stop", SERVICE])
        remove = command_text(["rm", "-f", *installed, "/usr/bin/vhba-responder"])
        guest.sh(f"{stop}; {remove}; systemctl daemon-reload", timeout=120, check=False)
