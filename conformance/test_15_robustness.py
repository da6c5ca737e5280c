"""Robustness: the module survives a responder that writes garbage, dies or stalls.

The per-test kernel health check (no BUG/WARNING/Oops, no new taint) is the
main assertion here; each test also checks the module still works afterwards.
"""

from __future__ import annotations

import textwrap

import pytest
from scsi_helpers import restart_drive, rmmod_eventually, wait_gone

from lab.cell.drives import DriveNode, OurResponder
from lab.cell.env import CellEnv
from lab.vm.guest import command_text

# Runs in the guest: opens its own device, answers its first command with garbage
# of every kind, then correctly, and prints what the kernel said to each write.
GARBAGE_SCRIPT = textwrap.dedent(
    """
    import errno, os, select, struct
    REQ = struct.Struct("=II16sB3xI")
    RESP = struct.Struct("=III")
    fd = os.open("/dev/vhba_ctl", os.O_RDWR | os.O_NONBLOCK)
    def write(label, data):
        try:
            n = os.write(fd, data)
            print(label, "ok", n)
        except OSError as exc:
            print(label, errno.errorcode[exc.errno])
    p = select.poll(); p.register(fd, select.POLLIN)
    assert p.poll(20000), "no command arrived within 20 s"
    buf = os.read(fd, 65536)
    tag, lun, cdb, cdb_len, data_len = REQ.unpack_from(buf)
    print("request", hex(cdb[0]), cdb_len, data_len, "padding", buf[25:28].hex())
    write("tiny", b"\\x01\\x02\\x03")
    write("unknown_tag", RESP.pack(tag ^ 0x5A5A0000, 0, 0))
    write("stale_generation", RESP.pack(tag + (1 << 8), 0, 0))
    write("huge_sense", RESP.pack(tag, 2, 0xFFFFFFFF) + b"\\x70" + bytes(17))
    # A valid answer must still be accepted after all that (if the huge sense one was not).
    inquiry = bytes([5, 0x80, 5, 2, 31]) + bytes(3) + b"GARBAGE Test drive      0.1 "
    write("valid", RESP.pack(tag, 0, len(inquiry)) + inquiry)
    os.close(fd)
    print("closed")
    """
)


@pytest.fixture
def our_drive(cell: CellEnv, drive: DriveNode) -> DriveNode:
    if not isinstance(cell.drive, OurResponder):
        pytest.skip("fault injection needs our responder")
    return drive


def test_garbage_responses_are_rejected_without_harm(cell: CellEnv, drive: DriveNode) -> None:
    result = cell.guest.sh(
        f"python3 - <<'EOF'\n{GARBAGE_SCRIPT}\nEOF", timeout=120, check=False
    )  # fmt: skip
    assert result.rc == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["tiny"] in ("EIO", "EINVAL"), lines
    assert lines["unknown_tag"] in ("EIO", "EINVAL"), lines
    assert lines["stale_generation"] in ("EIO", "EINVAL"), lines
    request = lines["request"].split()
    assert request[-1] == "000000", f"request header padding leaks bytes: {request[-1]}"
    if lines["huge_sense"].startswith("ok"):
        # The sense was clamped (at most 96 bytes), so the command is complete.
        assert int(lines["huge_sense"].split()[1]) <= 12 + 96, lines
    else:
        assert lines["valid"].startswith("ok"), lines
    assert "closed" in result.stdout
    # The cell's own drive is untouched by another fd's misbehaviour.
    dd = ["dd", f"if={drive.sr}", "of=/dev/null", "bs=2048", "count=16"]
    assert cell.guest.run(dd, check=False).rc == 0


@pytest.mark.slow
def test_responder_dying_mid_command_fails_io_and_removes_the_device(
    cell: CellEnv, our_drive: DriveNode
) -> None:
    assert cell.drive is not None
    try:
        cell.drive.ctl("fault", 0, spec="die:op=0x28")
        read = cell.guest.run(
            ["dd", f"if={our_drive.sr}", "of=/dev/null", "bs=2048", "count=8", "iflag=direct"],
            timeout=120,
            check=False,
        )
        assert read.rc != 0, "a read answered by a dead responder cannot succeed"
        assert wait_gone(cell.guest, our_drive.hctl, 10), "the SCSI device outlived its responder"
        rc, err = rmmod_eventually(cell.guest)
        assert rc == 0, f"module pinned after its responder died: {err}"
    finally:
        restart_drive(cell)


@pytest.mark.slow
def test_stalled_responder_is_timed_out_and_aborted(cell: CellEnv, our_drive: DriveNode) -> None:
    assert cell.drive is not None
    sr = our_drive.sr.rsplit("/", 1)[1]
    try:
        cell.guest.sh(f"echo 5 > {command_text([f'/sys/block/{sr}/device/timeout'])}")
        cell.drive.ctl("fault", 0, spec="hang:op=0x28,count=1")
        read = cell.guest.run(
            ["dd", f"if={our_drive.sr}", "of=/dev/null", "bs=2048", "count=1", "skip=100",
             "iflag=direct"],
            timeout=240,
            check=False,
        )  # fmt: skip
        dmesg = cell.guest.sh("dmesg | tail -40", check=False).stdout
        assert read.rc != 0 or "abort" in dmesg.lower(), (
            f"a never-answered read neither failed nor was aborted:\n{dmesg}"
        )
        # The responder is still alive and the module can be taken down cleanly.
        assert cell.drive.running()
        cell.drive.stop()
        rc, err = rmmod_eventually(cell.guest)
        assert rc == 0, f"module pinned after an aborted command: {err}"
    finally:
        restart_drive(cell)
