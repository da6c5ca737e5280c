"""Direct reads: our module serving READs from the image while our responder allows it.

The whole suite runs the drive untraced, as users do, so every group reads
through this path already; this group checks it directly: reads bypass the
responder yet return the image's bytes, a new disc, an injected fault or a
dying responder are honoured at once, and the module refuses backings it
must not read.
"""

from __future__ import annotations

import textwrap
import time

import pytest
from scsi_helpers import (
    CD1,
    CD2,
    insert,
    our_responder_only,
    restart_drive,
    rmmod_eventually,
    sg_raw,
    tur_until_good,
    wait_gone,
)

from lab.cell.drives import DriveNode, OurResponder
from lab.cell.env import CellEnv
from lab.errors import GuestWaitError
from lab.vm.guest import command_text

BS = 64 * 1024


@pytest.fixture
def untraced(cell: CellEnv, drive: DriveNode) -> OurResponder:
    """Our responder serving the cell, untraced (direct reads allowed)."""
    our_responder_only(cell, "direct reads")
    assert isinstance(cell.drive, OurResponder)
    return cell.drive


def _drive_status(drive: OurResponder) -> dict:
    return drive.ctl("status")["devices"][0]  # type: ignore[index]


def _sha_of_disc(cell: CellEnv, node: DriveNode, size: int) -> str:
    """sha256 of the first ``size`` bytes read with O_DIRECT in 64 KiB commands."""
    count = -(-size // BS)
    dd = command_text(["dd", f"if={node.sr}", f"bs={BS}", f"count={count}", "iflag=direct",
                       "status=none"])  # fmt: skip
    res = cell.guest.sh(f"{dd} | head -c {size} | sha256sum", timeout=600)
    return res.stdout.split()[0]


def _has_direct_reads(cell: CellEnv, drive: OurResponder) -> bool:
    """Whether the module must serve READs itself: ours does, upstream's does not.

    Another tree, neither known as ours nor as upstream's, is taken at its word:
    the ``direct_reads`` state the responder reports now.  For such a tree the
    state asserts below check nothing; the READ counts still do (a tree that
    says it serves READs must keep every one of them from the responder, one
    that does not must pass every one on).
    """
    if cell.lineage is None:
        return _drive_status(drive)["direct_reads"] == "on"
    return cell.lineage == "ours"


def _expect_direct(cell: CellEnv, drive: OurResponder) -> str:
    return "on" if _has_direct_reads(cell, drive) else "unsupported"


@pytest.mark.slow
def test_reads_bypass_the_responder_and_return_the_image(
    cell: CellEnv, untraced: OurResponder, record_property: pytest.RecordProperty
) -> None:
    node = cell.nodes[0]
    tur_until_good(cell.guest, node.sg)
    before = _drive_status(untraced)
    direct = _has_direct_reads(cell, untraced)
    assert before["direct_reads"] == _expect_direct(cell, untraced), before
    cd1 = cell.media["cd1"]
    assert _sha_of_disc(cell, node, cd1.size) == cd1.sha256
    after = _drive_status(untraced)
    served = after["reads"] - before["reads"]
    record_property("responder_reads", served)
    record_property("responder_other_commands", after["commands"] - before["commands"] - served)
    reads = -(-cd1.size // BS)
    if direct:
        # Direct reads are on and every READ is in range: none may reach us.
        # (Counting all commands instead counted the kernel's media polling,
        # ~1 per 2 s: a slow debug kernel's read took long enough to pass 25%.)
        assert served == 0, f"{served} of {reads} READs reached the responder"
    else:  # a module without direct reads (upstream's): every READ came to us
        assert served >= reads, f"only {served} READs reached the responder, of {reads}"


@pytest.mark.slow
def test_an_image_in_ram_is_read_straight_and_exactly(
    cell: CellEnv, untraced: OurResponder
) -> None:
    """A tmpfs image takes the module's copy-free path (reads straight into the command)."""
    cell.guest.run(["cp", CD1, "/dev/shm/cd1.iso"])
    try:
        restart_drive(cell, ["/dev/shm/cd1.iso"])
        node = cell.nodes[0]
        tur_until_good(cell.guest, node.sg)
        assert isinstance(cell.drive, OurResponder)
        before = _drive_status(cell.drive)
        cd1 = cell.media["cd1"]
        assert _sha_of_disc(cell, node, cd1.size) == cd1.sha256
        served = _drive_status(cell.drive)["reads"] - before["reads"]
        reads = -(-cd1.size // BS)
        if _has_direct_reads(cell, cell.drive):
            assert served == 0, f"{served} of {reads} READs reached the responder"
    finally:
        restart_drive(cell)
        cell.guest.run(["rm", "-f", "/dev/shm/cd1.iso"], check=False)


@pytest.mark.slow
def test_a_new_disc_is_read_at_once_never_the_old_one(
    cell: CellEnv, untraced: OurResponder
) -> None:
    node = cell.nodes[0]
    cd1, cd2 = cell.media["cd1"], cell.media["cd2"]
    try:
        insert(cell, CD2, cd2.size)
        assert _sha_of_disc(cell, node, cd2.size) == cd2.sha256
        assert _drive_status(untraced)["direct_reads"] == _expect_direct(cell, untraced)
    finally:
        insert(cell, CD1, cd1.size)
    assert _sha_of_disc(cell, node, cd1.size) == cd1.sha256


@pytest.mark.slow
def test_an_injected_read_error_reaches_the_reader(cell: CellEnv, untraced: OurResponder) -> None:
    node = cell.nodes[0]
    try:
        untraced.ctl("fault", 0, spec="sense:key=3,asc=0x11,op=0x28,lba=100-101")
        assert _drive_status(untraced)["direct_reads"] != "on"
        bad = sg_raw(cell.guest, node.sg, "28 00 00 00 00 64 00 00 01 00", alloc=2048)
        assert bad.sense is not None and bad.sense.triple == "03/11/00", bad.describe()
        good = sg_raw(cell.guest, node.sg, "28 00 00 00 00 10 00 00 01 00", alloc=2048)
        assert good.good, good.describe()
    finally:
        untraced.ctl("clear-faults", 0)
    tur_until_good(cell.guest, node.sg)  # one command after the fault is gone turns it on
    assert _drive_status(untraced)["direct_reads"] == _expect_direct(cell, untraced)


@pytest.mark.slow
def test_responder_killed_under_direct_reads_fails_io_cleanly(
    cell: CellEnv, untraced: OurResponder
) -> None:
    """32 reads in flight when the responder dies: all end, the device goes, rmmod works."""
    node = cell.nodes[0]
    fio = ["fio", "--name=r", f"--filename={node.sr}", "--rw=randread", "--bs=4k",
           "--iodepth=32", "--ioengine=libaio", "--direct=1", "--time_based", "--runtime=60",
           "--output=/tmp/fio-kill.out"]  # fmt: skip
    stat = ["cat", f"/sys/block/{node.sr.rsplit('/', 1)[1]}/stat"]

    def reads_done() -> int:  # the device's completed reads (first field of its stat)
        return int(cell.guest.run(stat).stdout.split()[0])

    try:
        before = reads_done()
        cell.guest.sh(f"(setsid {command_text(fio)} </dev/null >/dev/null 2>&1 &)")
        deadline = time.monotonic() + 60 * cell.guest.patience
        while reads_done() - before < 500:
            assert time.monotonic() < deadline, "fio did not get going within 60 s"
            time.sleep(0.1)
        pids = untraced.pids()
        assert pids, "no responder running"
        cell.guest.run(["kill", "-KILL", *pids])
        try:
            cell.guest.wait_for(["pgrep", "-x", "fio"], timeout=60, until_fails=True)
        except GuestWaitError:
            pytest.fail("fio still waits for reads 60 s after the responder died")
        assert wait_gone(cell.guest, node.hctl), "the SCSI device outlived its responder"
        rc, err = rmmod_eventually(cell.guest)
        assert rc == 0, f"module pinned after its responder died under direct reads: {err}"
    finally:
        cell.guest.run(["pkill", "-KILL", "-x", "fio"], timeout=60, check=False)
        restart_drive(cell)


# Runs in the guest: opens its own device and offers the module backings it must refuse.
REFUSALS = textwrap.dedent(
    """
    import errno, fcntl, os, struct
    ARG = struct.Struct("=iIQQ")
    SET = (1 << 30) | (ARG.size << 16) | (0xBE << 8) | 0xD1
    ctl = os.open("/dev/vhba_ctl", os.O_RDWR)
    image = os.open(IMAGE, os.O_RDONLY)
    wronly = os.open("/tmp/direct-wronly", os.O_WRONLY | os.O_CREAT, 0o600)
    rpipe, wpipe = os.pipe()
    def offer(label, fd, block_size=2048, offset=0, blocks=16):
        try:
            fcntl.ioctl(ctl, SET, ARG.pack(fd, block_size, offset, blocks))
            print(label, "ok")
        except OSError as exc:
            print(label, errno.errorcode[exc.errno])
    offer("pipe", rpipe)
    offer("write_only", wronly)
    offer("closed_fd", 999)
    offer("control_node", ctl)
    offer("block_size", image, block_size=3000)
    offer("no_blocks", image, blocks=0)
    offer("too_big", image, offset=1 << 62, blocks=1 << 62)
    offer("valid", image)
    offer("off", -1)
    os.close(ctl)
    print("closed")
    """
)


def test_module_refuses_backings_it_must_not_read(cell: CellEnv, untraced: OurResponder) -> None:
    if not _has_direct_reads(cell, untraced):
        pytest.skip("direct reads are our module's extension")
    script = f"IMAGE = {CD1!r}\n{REFUSALS}"
    res = cell.guest.sh(f"python3 - <<'EOF'\n{script}\nEOF", timeout=120, check=False)
    assert res.rc == 0, res.stderr
    got = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
    assert got == {
        "pipe": "EINVAL",
        "write_only": "EBADF",
        "closed_fd": "EBADF",
        "control_node": "EINVAL",
        "block_size": "EINVAL",
        "no_blocks": "EINVAL",
        "too_big": "EINVAL",
        "valid": "ok",
        "off": "ok",
    }, res.stdout
    assert "closed" in res.stdout


@pytest.mark.slow
def test_direct_reads_can_be_switched_off_by_the_admin(
    cell: CellEnv, untraced: OurResponder
) -> None:
    if not _has_direct_reads(cell, untraced):
        pytest.skip("direct_reads is our module's parameter")
    param = "/sys/module/vhba/parameters/direct_reads"
    try:
        cell.guest.sh(f"echo N > {command_text([param])}")
        restart_drive(cell)
        assert _drive_status(untraced)["direct_reads"] == "unsupported"
        cd1 = cell.media["cd1"]
        assert _sha_of_disc(cell, cell.nodes[0], cd1.size) == cd1.sha256
    finally:
        cell.guest.sh(f"echo Y > {command_text([param])}", timeout=60, check=False)
        restart_drive(cell)
    assert _drive_status(untraced)["direct_reads"] == "on"
