"""The attacker: a seat user's own responder, hostile on purpose.

udev's ``uaccess`` tag hands /dev/vhba_ctl to every user at a seat, so each
test here plays such a user (``labuser``, who holds the control node the way
a seat user does) running ``conformance/guest/attacker.py`` instead of a
drive, and checks what a kernel maintainer would: the user cannot make the
kernel read on its behalf what the user could not read, cannot make a drive
read itself or another vhba drive, cannot wedge error handling or hand a
command the midlayer gave up on to anyone, cannot receive another device's
commands, and cannot starve other drives.  Every test is bounded in time;
the per-test kernel health check (no BUG/WARNING/Oops/taint, sanitizer
reports on debug kernels) is part of each verdict.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from held_open import UNSAFE, HeldOpen, kasan, sr_uaf_reachable
from scsi_helpers import CD1, restart_drive, rmmod_eventually, wait_gone

from lab.build.debug_kernel import debug_series
from lab.cell.drives import DriveNode, find_nodes
from lab.cell.env import CellEnv
from lab.cell.module import insert_module
from lab.errors import GuestWaitError
from lab.vm.guest import Guest, command_text

ATTACKER = Path(__file__).resolve().parent / "guest" / "attacker.py"
GUEST_ATTACKER = "/usr/local/lib/vhba-attacker.py"
SEAT_USER = "labuser"
# "[v]" keeps pgrep/pkill from matching the shell that runs them.
SERVING = "[v]hba-attacker.py serve"


@dataclass
class Served:
    """A hostile drive running in the background as the seat user."""

    seat: Seat
    name: str
    hctl: str = ""
    sr: str = ""
    sg: str = ""
    log: str = field(init=False)

    def __post_init__(self) -> None:
        self.log = f"/tmp/attacker-{self.name}.jsonl"

    def signal(self, sig: str) -> None:
        self.seat.cell.guest.run(
            ["pkill", f"-{sig}", "-u", SEAT_USER, "-f", f"{SERVING} --name {self.name}"],
            check=False,
        )

    def pause(self) -> None:
        """Stop reading commands: from return on, they stay queued in the kernel.

        The signal alone is not enough: the drive's thread may be in poll()
        and would still read one more command, so this waits for the thread's
        own acknowledgement.
        """
        marker = f"{self.log}.paused"
        self.seat.cell.guest.run(["rm", "-f", marker])
        self.signal("USR1")
        assert _wait_for_file(self.seat.cell, marker, 20), f"drive {self.name} never paused"

    def resume(self) -> None:
        self.signal("USR2")

    def records(self) -> list[dict[str, object]]:
        out = self.seat.cell.guest.run(["cat", self.log]).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        self.signal("TERM")
        pgrep = ["pgrep", "-f", f"{SERVING} --name {self.name}"]
        _wait_gone(self.seat.cell, pgrep, 10)


@dataclass
class Seat:
    """The seat user's side of the guest: runs attacker.py, as that user or as root."""

    cell: CellEnv

    def run(self, *args: str, user: str = SEAT_USER, timeout: float = 120) -> dict:
        patience = ["--patience", str(self.cell.guest.patience)]
        argv = ["python3", GUEST_ATTACKER, args[0], *patience, *args[1:]]
        if user != "root":
            argv = ["runuser", "-u", user, "--", *argv]
        result = self.cell.guest.run(argv, timeout=timeout, check=False)
        assert result.rc == 0, f"attacker {args[0]} failed (rc {result.rc}): {result.stderr[-800:]}"
        return json.loads(result.stdout.strip().splitlines()[-1])

    def serve(self, name: str, *args: str, user: str = SEAT_USER) -> Served:
        served = Served(self, name)
        # "serve --name NAME" first: SERVING and Served find the process by it.
        argv = ["python3", GUEST_ATTACKER, "serve", "--name", name, "--log", served.log, *args,
                "--patience", str(self.cell.guest.patience)]  # fmt: skip
        if user != "root":
            argv = ["runuser", "-u", user, "--", *argv]
        out = f"/tmp/attacker-{name}.out"
        rm = command_text(["rm", "-f", served.log, f"{served.log}.paused"])
        self.cell.guest.sh(f"{rm}; nohup {command_text(argv)} >{command_text([out])} 2>&1 &")
        try:
            found = self.cell.guest.wait_for(["grep", "^hctl ", out], timeout=30)
        except GuestWaitError:
            said = self.cell.guest.run(["cat", out], check=False).stdout
            pytest.fail(f"the hostile drive {name} did not attach: {said[-800:]}")
        line = found.stdout.split()
        served.hctl, served.sr, served.sg = line[1], line[2], line[3]
        return served

    def probe(self, node: str, cdb: str, data_in: int = 0, timeout_ms: int = 5000) -> dict:
        return self.run("probe", node, cdb, "--data-in", str(data_in),
                        "--timeout-ms", str(timeout_ms), user="root")  # fmt: skip


@pytest.fixture
def seat(cell: CellEnv, drive: DriveNode) -> Iterator[Seat]:
    """attacker.py in the guest and /dev/vhba_ctl held by the seat user's group.

    What udev's uaccess ACL gives a seat user, group cdrom with mode 0660 gives
    ``labuser``; the node's owner and mode are restored afterwards, and every
    hostile drive still running is stopped.
    """
    guest = cell.guest
    guest.upload(ATTACKER, GUEST_ATTACKER, mode=0o644)
    before = guest.run(["stat", "-c", "%U:%G %a", "/dev/vhba_ctl"]).stdout.split()
    guest.sh("chgrp cdrom /dev/vhba_ctl && chmod 0660 /dev/vhba_ctl")
    try:
        yield Seat(cell)
    finally:
        # Most tests stop their drives themselves: wait only for what is left.
        guest.run(["pkill", "-TERM", "-f", SERVING], check=False)
        if not _wait_gone(cell, ["pgrep", "-f", SERVING], 5):
            guest.run(["pkill", "-KILL", "-f", SERVING], check=False)
        chown = command_text(["chown", before[0], "/dev/vhba_ctl"])
        chmod = command_text(["chmod", before[1], "/dev/vhba_ctl"])
        guest.sh(f"{chown} && {chmod}", check=False)


def _wait_for_file(cell: CellEnv, path: str, seconds: int) -> bool:
    """Whether ``path`` is non-empty within ``seconds``."""
    try:
        cell.guest.wait_for(["test", "-s", path], timeout=seconds, interval=0.5)
    except GuestWaitError:
        return False
    return True


def _wait_gone(cell: CellEnv, pgrep: list[str], seconds: int) -> bool:
    """Whether the processes ``pgrep`` finds are gone within ``seconds``."""
    try:
        cell.guest.wait_for(pgrep, timeout=seconds, interval=0.2, until_fails=True)
    except GuestWaitError:
        return False
    return True


def _seat_readable_image(cell: CellEnv) -> str:
    """cd1, readable by the seat user (the lab uploads media root-only)."""
    cell.guest.run(["chmod", "a+r", CD1])
    return CD1


# ------------------------------------------------------------ backings
def test_drive_cannot_be_its_own_backing(seat: Seat) -> None:
    """Reading its own /dev/srN from the module's work item deadlocks the drive."""
    out = seat.run("backing", "@self")
    assert not out["results"]["@self"].startswith("open:"), out
    assert out["results"]["@self"] != "ok", (
        f"the module accepted the drive's own {out['sr']} as its direct-read backing"
    )


def test_another_vhba_drive_cannot_be_a_backing(seat: Seat, drive: DriveNode) -> None:
    out = seat.run("backing", drive.sr)
    assert not out["results"][drive.sr].startswith("open:"), out
    assert out["results"][drive.sr] != "ok", f"the module accepted vhba drive {drive.sr}"


def _assert_file_on_refused(seat: Seat, device: str, what: str) -> None:
    """Mount ``device`` read-only; the seat user's drive must not get one of its files."""
    guest = seat.cell.guest
    mnt = "/mnt/attacker"
    guest.run(["mkdir", "-p", mnt])
    guest.run(["mount", "-o", "ro", device, mnt], timeout=60)
    try:
        name = guest.sh(f"find {mnt} -type f | head -1").stdout.strip()
        assert name, "the cell's disc has no file"
        out = seat.run("backing", name)
        assert not out["results"][name].startswith("open:"), out
        assert out["results"][name] != "ok", f"the module accepted {name}, a file on {what}"
    finally:
        guest.run(["umount", mnt], timeout=60, check=False)


@pytest.mark.slow
def test_file_on_a_vhba_drive_cannot_be_a_backing(seat: Seat, drive: DriveNode) -> None:
    """A backing on a filesystem mounted from a vhba drive stalls with that drive."""
    _assert_file_on_refused(seat, drive.sr, f"vhba drive {drive.sr}")


@pytest.mark.slow
def test_file_on_a_loop_device_of_a_vhba_drive_cannot_be_a_backing(
    seat: Seat, drive: DriveNode
) -> None:
    """Loop stacked on a vhba drive: the loop reads the drive, so it stalls with it.

    Any seat user gets such a loop device from udisks (``udisksctl
    loop-setup``); the module cannot see which file a loop device reads.
    """
    guest = seat.cell.guest
    guest.run(["modprobe", "loop"], check=False)
    loop = guest.run(["losetup", "-f", "--show", "-r", drive.sr]).stdout.strip()
    try:
        _assert_file_on_refused(seat, loop, f"{loop}, a loop device of vhba drive {drive.sr}")
    finally:
        guest.run(["losetup", "-d", loop], check=False)


def test_backing_the_kernel_cannot_read_is_refused(seat: Seat) -> None:
    """/proc/1/stat has no read_iter: accepting it means a warning per READ."""
    out = seat.run("backing", "/proc/1/stat")
    assert not out["results"]["/proc/1/stat"].startswith("open:"), out
    assert out["results"]["/proc/1/stat"] != "ok", "the module accepted /proc/1/stat"


# ------------------------------------------------------------ lifetimes
def _stall_a_read(seat: Seat, name: str, lba: int, timeout_s: int) -> tuple[Served, str]:
    """A seat user's drive whose READ of ``lba`` is in flight when its responder stops reading.

    Its timeouts are ``timeout_s`` (the attacker's are 30 s: the same path,
    slower).  The reader (attacker.py pread, files /tmp/<name>.*) opened the
    drive before it stalled, as open() sends commands of its own.  Returns
    the drive and its SCSI device's sysfs directory.
    """
    guest = seat.cell.guest
    served = seat.serve(name, "--image", _seat_readable_image(seat.cell))
    dev = f"/sys/bus/scsi/devices/{served.hctl}"
    attrs = [command_text([f"{dev}/{attr}"]) for attr in ("timeout", "eh_timeout")]
    guest.sh("; ".join(f"echo {timeout_s} > {attr}" for attr in attrs) + f"; rm -f /tmp/{name}.*")
    reader = ["python3", GUEST_ATTACKER, "pread", served.sr, "--lba", str(lba),
              "--go", f"/tmp/{name}.go", "--after", f"/tmp/{name}.after"]  # fmt: skip
    guest.sh(f"nohup {command_text(reader)} >/tmp/{name}.out 2>&1 &")
    assert _wait_for_file(seat.cell, f"/tmp/{name}.out", 60), "the reader never opened the drive"
    served.pause()
    guest.run(["touch", f"/tmp/{name}.go"])
    return served, dev


def _end_stalled_read(seat: Seat, served: Served, name: str, wait_s: int) -> None:
    """The drive reads again; the reader checks its buffer, ends, and the drive goes."""
    served.resume()
    seat.cell.guest.run(["touch", f"/tmp/{name}.after"])
    _wait_gone(seat.cell, ["pgrep", "-f", "[v]hba-attacker.py pread"], wait_s)
    served.stop()


@pytest.mark.slow
def test_given_up_read_is_never_handed_out(seat: Seat) -> None:
    """A READ that timed out and failed stays dead.

    The drive stops reading commands; a READ of a marked block times out
    (2 s) and fails: the module's timeout handler takes it away at once
    (before 5.10: its abort succeeds, the retry times out, and error handling
    escalates once every stuck command, sr's 30 s media polls included, has
    timed out).  When the drive reads again, that READ must not be among the
    commands it gets, and nothing may be written into the reader's buffer
    (the pages of a request that has completed) afterwards.
    """
    guest = seat.cell.guest
    served, dev = _stall_a_read(seat, "giveup", lba=777, timeout_s=2)
    finished = _wait_for_file(seat.cell, "/tmp/giveup.go.done", 150)
    state = guest.run(["cat", f"{dev}/state"], check=False).stdout.strip()
    stuck = "" if finished else guest.sh(
        "ps -eo pid,stat,wchan:32,comm | awk '$2 ~ /D/'", check=False).stdout  # fmt: skip
    _end_stalled_read(seat, served, "giveup", wait_s=20)
    assert finished, (
        f"the READ neither completed nor failed within 150 s (device {state}); "
        f"tasks in D state:\n{stuck}"
    )
    out = json.loads(guest.run(["tail", "-1", "/tmp/giveup.out"]).stdout)
    assert out["outcome"] != "read 2048", f"the stalled READ succeeded: {out}"
    late = [r for r in served.records() if r["lba"] == 777 and r["phase"] >= 1]
    assert not late, (
        f"after the READ had failed ({out['outcome']} in {out['seconds']} s, device {state}), "
        f"the module handed it to the responder again: {late[:2]}"
    )
    assert not out["late_write"], (
        f"after the READ had failed ({out['outcome']}), the module wrote into its buffer: {out}"
    )


# The READ's own timeout in the reset test: a module that loses the command at
# the reset leaves it until then; one that ends it is read again in seconds.
RESET_READ_TIMEOUT_S = 60


@pytest.mark.slow
def test_a_reset_of_a_running_drive_loses_no_command(seat: Seat) -> None:
    """root's device reset (SG_SCSI_RESET, sg_reset) outside error recovery.

    The midlayer still waits for every command the drive holds, so the reset
    must end them, as a real drive's reset does (the block layer then sends
    them again), not just forget them: a forgotten READ would wait for its
    own timeout (the issuer's choice, here 60 s) before anything retried it.
    """
    guest = seat.cell.guest
    served, _ = _stall_a_read(seat, "reset", lba=555, timeout_s=RESET_READ_TIMEOUT_S)
    inflight = f"/sys/block/{Path(served.sr).name}/inflight"  # "reads writes"
    try:
        # the READ must be in the drive's hands before the reset, not issued after it
        guest.wait_for(["sh", "-c", f'read r w < {inflight} && [ "$r" -ge 1 ]'], timeout=30)
        reset = guest.run(["sg_reset", "-d", served.sg], timeout=60, check=False)
        served.resume()
        finished = _wait_for_file(seat.cell, "/tmp/reset.go.done", 2 * RESET_READ_TIMEOUT_S)
    finally:
        _end_stalled_read(seat, served, "reset", wait_s=20)
    # A module without a device reset handler fails the reset (upstream's): it then
    # keeps the READ, and the responder serves it when it reads again.
    said = f"sg_reset rc {reset.rc} {reset.stderr.strip()[-200:]}"
    assert finished, f"the READ had not ended {2 * RESET_READ_TIMEOUT_S} s after the reset"
    out = json.loads(guest.run(["tail", "-1", "/tmp/reset.out"]).stdout)
    assert out["outcome"] == "read 2048" and out["seconds"] < RESET_READ_TIMEOUT_S / 2, (
        f"a READ in flight at a device reset ended {out['outcome']} after {out['seconds']} s "
        f"(its timeout: {RESET_READ_TIMEOUT_S} s): the reset dropped it instead of ending it "
        f"({said})"
    )


@pytest.mark.slow
def test_device_number_reuse_never_leaks_commands(seat: Seat) -> None:
    """The next opener must never get commands sent to the closed fd's device."""
    out = seat.run("reuse", "--seconds", "4", user="root")
    assert out["sent"] > 20, out
    assert out["secret_leaked"] == 0, (
        f"the second opener (device {out['second_num']}) received {out['secret_leaked']} "
        f"data-out commands carrying the first opener's (device {out['first_num']}) data"
    )


def test_an_mrw_drive_held_open_outlives_its_responder(seat: Seat) -> None:
    """The seat user's drive claims MRW writing, the user holds /dev/srN open, the responder quits.

    The cdrom layer then registers its MRW exit hook, which the disk's
    release runs after the close has freed the SCSI device: sr's
    use-after-free (docs/kernel-bugs.md), within reach of any seat user on
    every kernel since 5.18.  The module cannot prevent it; a KASAN kernel
    reports it (a known kernel bug, conformance/known-failures.toml), and the
    test is skipped where nothing would tell.
    """
    guest = seat.cell.guest
    if sr_uaf_reachable(guest, claims_mrw=True) and not kasan(guest):
        pytest.skip(f"{UNSAFE}; only a KASAN kernel can show it without risking the cell")
    served = seat.serve("mrw", "--image", _seat_readable_image(seat.cell), "--mrw")
    seat.cell.guest.settle()  # udev gives /dev/srN its group (cdrom) once it has probed it
    with HeldOpen(seat.cell.guest, served.sr, user=SEAT_USER) as holder:
        served.stop()
        assert wait_gone(seat.cell.guest, served.hctl, 30), f"{served.hctl} outlived its responder"
        holder.close()


@pytest.mark.slow
def test_rmmod_races_closes_and_completions(seat: Seat) -> None:
    """Rounds of: drives reading directly, responders killed mid-read, rmmod at once.

    rmmod may fail while a device is still going away, never hang; once the
    devices are gone it must succeed, and the module must load again.
    """
    guest = seat.cell.guest
    assert seat.cell.drive is not None
    image = _seat_readable_image(seat.cell)
    # Past this an rmmod counts as hung; SIGKILL cannot cut one short inside the
    # kernel, so a slow one (a debug kernel's) needs the guest's patience.
    rmmod_limit = round(10 * guest.patience)
    seat.cell.drive.stop()
    try:
        for round_ in range(3):
            drives = [seat.serve(f"race{round_}-{i}", "--image", image, "--direct")
                      for i in range(2)]  # fmt: skip
            reads = [["dd", f"if={d.sr}", "of=/dev/null", "bs=32k", "count=40", "iflag=direct"]
                     for d in drives]  # fmt: skip
            readers = " ".join(f"{command_text(dd)} >/dev/null 2>&1 &" for dd in reads)
            # One script, not a poll from the host: the race is rmmod tried at once
            # after the kill, while the closes and completions are still running.
            race = guest.sh(
                f"{readers} sleep 0.3; {command_text(['pkill', '-KILL', '-f', SERVING])}; "
                f"for i in $(seq 100); do timeout -s KILL {rmmod_limit} rmmod vhba 2>/dev/null "
                "&& exit 0; "
                "test $? = 137 && { echo HUNG; exit 1; }; sleep 0.1; done; exit 1",
                timeout=120,
                check=False,
            )
            assert "HUNG" not in race.stdout, f"round {round_}: rmmod hung"
            assert race.rc == 0, f"round {round_}: rmmod never succeeded: {race.stderr}"
            guest.run(["pkill", "-x", "dd"], check=False)
            insert_module(guest)
            guest.sh("chgrp cdrom /dev/vhba_ctl && chmod 0660 /dev/vhba_ctl")
    finally:
        restart_drive(seat.cell)
        guest.sh("chgrp cdrom /dev/vhba_ctl && chmod 0660 /dev/vhba_ctl", check=False)


# ------------------------------------------------------------ isolation
@pytest.mark.slow
def test_stalled_drive_does_not_starve_another(
    seat: Seat, drive: DriveNode, record_property: pytest.RecordProperty
) -> None:
    """One stalled responder with 64 commands queued; the cell's drive keeps serving reads."""
    guest = seat.cell.guest
    served = seat.serve("stall", "--image", _seat_readable_image(seat.cell))
    flood = ["python3", GUEST_ATTACKER, "flood", served.sr, "--count", "64",
             "--go", "/tmp/flood.go"]  # fmt: skip
    guest.sh(f"rm -f /tmp/flood.*; nohup {command_text(flood)} >/tmp/flood.out 2>&1 &")
    assert _wait_for_file(seat.cell, "/tmp/flood.out", 90), "the flood never opened the drive"
    served.pause()
    guest.sh("touch /tmp/flood.go; sleep 3")
    started = time.monotonic()
    other = guest.run(
        ["timeout", "25", "dd", f"if={drive.sr}", "of=/dev/null", "bs=2048", "count=16",
         "skip=1000", "iflag=direct"],
        timeout=60,
        check=False,
    )  # fmt: skip
    latency = time.monotonic() - started
    record_property("other_drive_read_s", round(latency, 3))
    served.resume()
    ended = _wait_gone(seat.cell, ["pgrep", "-f", "[v]hba-attacker.py flood"], 60)
    served.stop()
    assert ended, "the flood of READs never ended"
    assert other.rc == 0 and latency < 10, (
        f"a read on {drive.sr} took {latency:.1f} s (rc {other.rc}: {other.stderr[-200:]}) "
        "while another drive's responder stalled with 64 commands queued"
    )


@pytest.mark.slow
def test_a_silent_responder_does_not_stop_the_host(
    seat: Seat, drive: DriveNode, record_property: pytest.RecordProperty
) -> None:
    """A drive whose responder stops answering fails its own commands; the others go on.

    What the midlayer does with a command that times out twice is host-wide
    error recovery: every drive's new commands wait, first until each stuck
    command of the silent drive has timed out (sr's media polls carry 30 s),
    then while the error handler tries aborts and resets, each followed by a
    TEST UNIT READY that the silent responder never answers either.  A seat
    user could stop every drive of the host for a minute, over and over.
    Here the silent drive's timeouts are 3 s (the attacker has 30 s, the same
    path, slower); the cell's drive is read meanwhile for 50 s, a block every
    0.2 s, and no read may wait for the other drive's recovery.
    """
    # A READ through the block layer: it carries the 3 s and is retried once.
    served, dev = _stall_a_read(seat, "silent", lba=100, timeout_s=3)
    watched = seat.run("watch", drive.sr, "--seconds", "50", user="root", timeout=240)
    state = seat.cell.guest.run(["cat", f"{dev}/state"], check=False).stdout.strip()
    record_property("other_drive_worst_read_s", watched["worst_s"])
    _end_stalled_read(seat, served, "silent", wait_s=120)
    assert watched["failed"] == 0 and watched["worst_s"] < 2.5, (
        f"while another drive's responder was silent, reads of {drive.sr} stalled: the "
        f"slowest of {watched['reads']} took {watched['worst_s']} s, {watched['failed']} failed "
        f"(silent drive {state})"
    )
    assert state == "running", f"the silent drive was taken {state}, not just its commands failed"


def test_a_drive_that_never_answers_its_scan_does_not_hold_up_another(
    seat: Seat, record_property: pytest.RecordProperty
) -> None:
    """A seat user's drive leaves its INQUIRY unanswered; another opener's drive appears at once.

    Adding a SCSI device holds its host's scan lock across INQUIRY and sr's
    probe, all answered (or not) by the new drive's responder.  On a host
    shared by every opener, one responder that answers each command just
    before its timeout (20 to 30 s), or never, keeps every other user's
    drive from appearing for minutes: cdemu-daemon, which looks its device
    up a second after opening, gives up on it.  Bounded: the first drive's
    INQUIRY is left for at most 15 s, then its fd closed.
    """
    out = seat.run("scan", "--seconds", "15", timeout=180)
    record_property("other_drive_attach_s", out["attached_s"])
    assert out["attached_s"] is not None and out["attached_s"] < 8, (
        f"while drive {out['blocker']} left its INQUIRY unanswered, drive {out['other']} "
        f"took {out['attached_s'] or 'more than ' + str(out['waited_s'])} s to appear"
    )


def test_a_held_drive_keeps_its_device_number_until_its_host_is_freed(seat: Seat) -> None:
    """The seat user holds a drive's /dev/srN, closes its fd, opens another: a new number.

    Each fd has a SCSI host of its own, capped by device numbers (240); a
    held node keeps a closed drive's host (its error handler thread, its
    workqueue) alive after its removal.  Were its number free again, a user
    who repeats this would make hosts without end.
    """
    if sr_uaf_reachable(seat.cell.guest, claims_mrw=False):
        pytest.skip(f"{UNSAFE}: attacker/test_an_mrw_drive_held_open_* shows it under KASAN")
    out = seat.run("pin")
    if not out["host_removed"] and out["same_host"]:
        pytest.skip("this module puts every drive on one host: no host outlives its fd")
    assert out["host_removed"], f"the closed drive's host was never removed: {out}"
    assert out["second_num"] != out["first_num"], (
        f"device number {out['first_num']} was handed out again while the host of the drive "
        "that had it was still held"
    )


# Modules that load without hardware and nothing uses: a plain kernel has
# dummy, the lean debug kernel only its CRC helpers.
LOADABLE = ("dummy", "crct10dif_generic")


def _an_unloaded_module(guest: Guest, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` built as a module here and not loaded (unloading it if unused)."""
    for name in names:
        plan = guest.run(["modprobe", "--show-depends", name], check=False)
        lines = plan.stdout.strip().splitlines()
        if plan.rc != 0 or not lines or not lines[-1].startswith("insmod "):
            continue  # absent, or built in: loading it would wait for nothing
        guest.run(["modprobe", "-r", "-q", name], check=False)
        if guest.run(["test", "-e", f"/sys/module/{name}"], check=False).rc != 0:
            return name
    return None


def test_a_drive_that_claims_to_be_a_disk_cannot_hold_up_module_loads(
    seat: Seat, record_property: pytest.RecordProperty
) -> None:
    """A responder says "disk" and leaves sd's probe commands unanswered; modprobe goes on.

    sd probes a disk asynchronously, and each module load waits for every
    asynchronous probe on the machine to end: a seat user's responder that
    stalls them (each command 30 s, retried) would hold up every modprobe,
    by anyone, for minutes.  vhba serves CD/DVD drives: a device of another
    type gets no upper driver (it keeps its sg node).  Bounded: the load is
    given 20 s, then the drive is closed.
    """
    guest = seat.cell.guest
    module = _an_unloaded_module(guest, LOADABLE)
    if module is None:
        pytest.skip(f"none of {', '.join(LOADABLE)} can be loaded here (not built, or in use)")
    out = seat.run("disk", "--module", module, "--seconds", "20", user="root", timeout=180)
    record_property("modprobe_s", out["modprobe_s"])
    took = out["modprobe_s"]
    assert took is not None and took < 8 and out["rc"] == 0, (
        f"while drive {out['drive']} claimed to be a disk and left {out['unanswered']} "
        f"commands unanswered, modprobe {module} took {took or 'more than ' + str(out['waited_s'])}"
        f" s (rc {out['rc']})"
    )


# ------------------------------------------------------------ hostile answers
# Vendor-specific opcodes, one per hostile answer, so one drive serves them all.
HOST_BYTES = {0xD0: 0x000D0000, 0xD1: 0x000C0002, 0xD2: 0x000B0000, 0xD3: 0x07000002}
SENSE_LENGTHS = {0xC0: 0, 0xC1: 1, 0xC2: 17, 0xC3: 18, 0xC4: 95, 0xC5: 96, 0xC6: 97,
                 0xC7: 252, 0xC8: 0xFFFFFFFF}  # fmt: skip
# A hostile answer must end its command at once: well before the SG_IO timeout,
# which a command the module dropped or the midlayer kept retrying runs into.
# Not scaled by patience: on the debug kernel these round trips take < 0.1 s.
PROBE_TIMEOUT_MS = 4000
ANSWERED_S = 3.0


@pytest.mark.slow
def test_status_word_cannot_set_host_or_driver_bytes(seat: Seat) -> None:
    """A host byte such as DID_REQUEUE would make the midlayer retry at the responder's will."""
    served = seat.serve(
        "status", *[f"--hostile={op:#x}:{word:#x}:18" for op, word in HOST_BYTES.items()]
    )
    results = {}
    for op in HOST_BYTES:
        results[op] = seat.probe(
            served.sg, f"{op:02x}000000000000000000", timeout_ms=PROBE_TIMEOUT_MS
        )
    served.stop()
    deliveries = {op: 0 for op in HOST_BYTES}
    for record in served.records():
        if record["op"] in deliveries:
            deliveries[record["op"]] += 1
    for op, word in HOST_BYTES.items():
        got = results[op]
        assert "error" not in got, got
        assert deliveries[op] <= 1 and got["seconds"] < ANSWERED_S, (
            f"status word {word:#010x}: the command reached the responder "
            f"{deliveries[op]} times in {got['seconds']} s (host byte {got['host']:#x})"
        )
        if (word >> 16) & 0xFF:
            assert got["host"] != (word >> 16) & 0xFF, f"{word:#010x}: the responder chose {got}"


@pytest.mark.slow
def test_sense_lengths_at_every_boundary(seat: Seat) -> None:
    served = seat.serve("sense", *[f"--hostile={op:#x}:2:{n}" for op, n in SENSE_LENGTHS.items()])
    for op, declared in SENSE_LENGTHS.items():
        got = seat.probe(served.sg, f"{op:02x}000000000000000000", timeout_ms=PROBE_TIMEOUT_MS)
        assert "error" not in got and got["seconds"] < ANSWERED_S, (declared, got)
        assert got["sense_len"] <= 96, f"declared {declared}: {got['sense_len']} sense bytes"
        if declared >= 18:
            assert got["status"] == 2 and got["sense_len"] >= 18, (declared, got)
    served.stop()


@pytest.mark.slow
def test_good_with_short_data_reports_the_residue(seat: Seat) -> None:
    served = seat.serve("short", "--image", _seat_readable_image(seat.cell), "--short=0x28:100")
    got = seat.probe(served.sg, "28000000001000000100", data_in=2048)
    served.stop()
    assert got.get("status") == 0 and got["host"] == 0, got
    assert got["resid"] == 2048 - 100, f"100 of 2048 bytes answered, resid {got['resid']}"


@pytest.mark.slow
def test_random_campaign(
    seat: Seat, drive: DriveNode, record_property: pytest.RecordProperty
) -> None:
    """Seeded random read()/write()/ioctl()/poll()/close() calls by the seat user.

    Replay a failure with ``attacker.py fuzz --seed N`` in the guest.
    """
    seed = random.SystemRandom().randrange(1 << 32)
    record_property("seed", seed)
    print(f"random campaign seed {seed}")
    out = seat.run("fuzz", "--seed", str(seed), "--ops", "20000", "--seconds", "60", timeout=180)
    record_property("ops", out["ops"])
    assert out["ops"] >= 1000, f"seed {seed}: only {out['ops']} calls in 60 s: {out}"
    read = seat.cell.guest.run(
        ["dd", f"if={drive.sr}", "of=/dev/null", "bs=2048", "count=16", "iflag=direct"],
        check=False,
    )
    assert read.rc == 0, f"seed {seed}: the cell's drive stopped reading: {read.stderr}"


# ------------------------------------------------------------ a 32-bit responder
COMPAT32 = Path(__file__).resolve().parent / "guest" / "compat32.c"
GUEST_COMPAT32 = "/usr/local/lib/vhba-compat32"
# Freestanding: gcc's -m32 code generation and ld's elf_i386, no 32-bit libc.
COMPAT32_CFLAGS = ["-m32", "-static", "-nostdlib", "-ffreestanding", "-fno-pic", "-no-pie",
                   "-fno-stack-protector", "-fno-tree-loop-distribute-patterns", "-O2"]  # fmt: skip
EFAULT, EINVAL, ENOTTY = -14, -22, -25


def _build_compat32(cell: CellEnv) -> None:
    """Build compat32.c in the guest, or skip saying why this cell cannot run it."""
    guest = cell.guest
    guest.upload(COMPAT32, "/tmp/compat32.c", mode=0o644)
    built = guest.run(["gcc", *COMPAT32_CFLAGS, "-o", GUEST_COMPAT32, "/tmp/compat32.c"],
                      timeout=120, check=False)  # fmt: skip
    if built.rc != 0:
        pytest.skip(f"this image cannot build a 32-bit program: {built.stderr.strip()[-300:]}")
    ran = guest.run([GUEST_COMPAT32], check=False)
    if "usage" not in ran.stdout:
        pytest.skip(f"this kernel does not run 32-bit programs: {ran.stderr.strip()[-300:]}")


@pytest.mark.slow
def test_32bit_responder(seat: Seat) -> None:
    """A 32-bit responder (a 32-bit cdemu-daemon): the compat ioctl path works.

    Its ioctls answer as the native ones do (bad pointers EFAULT, unknown
    commands ENOTTY), its drive attaches and reads back the image, and a
    direct-read backing set from 32-bit code is the one the module reads.
    """
    cell = seat.cell
    guest = cell.guest
    _build_compat32(cell)
    image = _seat_readable_image(cell)
    blocks = cell.media["cd1"].size // 2048
    out = "/tmp/compat32.out"
    argv = ["runuser", "-u", SEAT_USER, "--", GUEST_COMPAT32, image, str(blocks)]
    guest.sh(f"nohup {command_text(argv)} >{out} 2>&1 &")
    try:
        try:
            guest.wait_for(["grep", "-q", "^ready", out], timeout=30)
        except GuestWaitError:
            said = guest.run(["cat", out], check=False).stdout
            pytest.fail(f"the 32-bit responder did not get going: {said[-800:]}")
        lines = guest.run(["cat", out]).stdout.splitlines()
        ioctl = {w[1]: int(w[2]) for w in (line.split() for line in lines) if w[0] == "ioctl"}
        assert ioctl["get_address"] == 0 and ioctl["get_devnum"] == 0, ioctl
        assert ioctl["get_address_null"] == EFAULT, ioctl
        assert ioctl["get_address_top"] == EFAULT, ioctl
        assert ioctl["unknown"] == ENOTTY, ioctl
        direct = ioctl["direct_read"] == 0
        if direct:
            assert ioctl["direct_read_null"] == EFAULT, ioctl
            assert ioctl["direct_read_bad_block"] == EINVAL, ioctl
        else:
            assert ioctl["direct_read"] == ENOTTY, f"direct reads refused from 32-bit: {ioctl}"
        hctl = next(line.split()[1] for line in lines if line.startswith("hctl "))
        node = find_nodes(guest, hctl)
        inquiry = guest.run(["sg_inq", node.sg]).stdout
        assert "LAB32" in inquiry, f"INQUIRY of the 32-bit drive: {inquiry}"
        want = guest.run(["sha256sum", image]).stdout.split()[0]
        read = ["dd", f"if={node.sr}", "bs=2048", f"count={blocks}", "iflag=direct"]
        got = guest.sh(f"{command_text(read)} 2>/dev/null | sha256sum", timeout=120)
        assert got.stdout.split()[0] == want, "the 32-bit drive read back other bytes"
        served = guest.run(["grep", "-c", "^read ", out], check=False).stdout.strip()
        if direct:
            assert served == "0", f"{served} READs reached the responder despite its backing"
        else:
            assert int(served) > 0, "no READ reached the 32-bit responder"
    finally:
        guest.run(["pkill", "-TERM", "-u", SEAT_USER, "-f", GUEST_COMPAT32], check=False)
        _wait_gone(cell, ["pgrep", "-f", f"[{GUEST_COMPAT32[0]}]{GUEST_COMPAT32[1:]}"], 20)


# ------------------------------------------------------------ a backing served by FUSE
FUSEFS = Path(__file__).resolve().parent / "guest" / "fusefs.py"
GUEST_FUSEFS = "/usr/local/lib/vhba-fusefs.py"
FUSE_MOUNT = "/mnt/attacker-fuse"
FUSE_SERVER = "[v]hba-fusefs.py"


@dataclass
class FuseBacking:
    """fusefs.py mounted by root: a file whose bytes name the reader, and that can stall."""

    seat: Seat
    image: str = f"{FUSE_MOUNT}/image"

    def signal(self, sig: str) -> None:
        self.seat.cell.guest.run(["pkill", f"-{sig}", "-f", FUSE_SERVER])

    def serve_direct(self, name: str) -> Served:
        """The seat user's drive, its image on FUSE, its READs served by the module."""
        served = self.seat.serve(name, "--image", self.image, "--direct")
        grep = ["grep", "^direct ", f"/tmp/attacker-{name}.out"]
        out = self.seat.cell.guest.run(grep).stdout.split()
        if out[1:] == ["ENOTTY"]:
            served.stop()
            pytest.skip("the module has no direct reads (an extension of ours)")
        assert out[1:] == ["ok"], f"the module refused a FUSE backing: {out}"
        return served


@pytest.fixture
def fuse_backing(seat: Seat) -> Iterator[FuseBacking]:
    guest = seat.cell.guest
    guest.upload(FUSEFS, GUEST_FUSEFS, mode=0o644)
    guest.run(["modprobe", "fuse"], timeout=60, check=False)
    fusefs = ["python3", GUEST_FUSEFS, FUSE_MOUNT, "--size", "4194304"]
    guest.run(["mkdir", "-p", FUSE_MOUNT])
    guest.sh(f"(nohup {command_text(fusefs)} >/tmp/fusefs.out 2>&1 &)")
    try:
        guest.wait_for(["grep", "-q", "ready", "/tmp/fusefs.out"], timeout=20)
    except GuestWaitError:
        said = guest.run(["cat", "/tmp/fusefs.out"], check=False).stdout
        pytest.fail(f"the FUSE server did not come up: {said[-800:]}")
    try:
        yield FuseBacking(seat)
    finally:
        guest.run(["pkill", "-USR2", "-f", FUSE_SERVER], check=False)
        drives = command_text(["pkill", "-TERM", "-f", SERVING])
        guest.sh(f"{drives}; sleep 1", timeout=60, check=False)
        server = command_text(["pkill", "-TERM", "-f", FUSE_SERVER])
        umount = command_text(["umount", "-l", FUSE_MOUNT])
        guest.sh(f"{server}; sleep 3; {umount}", timeout=60, check=False)


@pytest.mark.slow
def test_direct_reads_carry_the_responders_credentials(
    fuse_backing: FuseBacking, seat: Seat
) -> None:
    """The module's work item must read the backing as the seat user, not as root."""
    guest = seat.cell.guest
    served = fuse_backing.serve_direct("creds")
    uid = guest.run(["id", "-u", SEAT_USER]).stdout.strip()
    dd = command_text(["dd", f"if={served.sr}", "bs=2048", "count=1", "skip=5", "iflag=direct"])
    block = guest.sh(f"{dd} 2>/dev/null | head -c 60").stdout
    served.stop()
    assert "blk=0000000005" in block, f"not the image's block 5: {block!r}"
    assert not [r for r in served.records() if r["lba"] == 5], "READ went to the responder"
    assert f"uid={int(uid):010d}" in block, (
        f"the backing was read as {block.split()[0]}, not as {SEAT_USER} (uid {uid}): "
        "the kernel read it on the seat user's behalf with other credentials"
    )


@pytest.mark.slow
def test_stalled_backing_cannot_wedge_abort_close_or_rmmod(
    fuse_backing: FuseBacking, seat: Seat
) -> None:
    """A backing that never answers: the READ fails, close() returns, rmmod is not stuck."""
    guest = seat.cell.guest
    assert seat.cell.drive is not None
    seat.cell.drive.stop()  # so that only the attacker's fd pins the module
    served = fuse_backing.serve_direct("stalled")
    dev = f"/sys/bus/scsi/devices/{served.hctl}"
    timeout_attr, eh_attr = command_text([f"{dev}/timeout"]), command_text([f"{dev}/eh_timeout"])
    guest.sh(f"echo 2 > {timeout_attr}; echo 2 > {eh_attr}")
    fuse_backing.signal("USR1")
    try:
        dd = ["dd", f"if={served.sr}", "of=/dev/null", "bs=2048", "count=1", "skip=9",
              "iflag=direct"]  # fmt: skip
        guest.sh(
            f"rm -f /tmp/stalled.rc; ({command_text(dd)}; "
            "echo $? >/tmp/stalled.rc) >/tmp/stalled.dd 2>&1 &"
        )
        failed = _wait_for_file(seat.cell, "/tmp/stalled.rc", 60)
        stuck = guest.sh("ps -eo pid,stat,wchan:32,comm | awk '$2 ~ /D/'", check=False).stdout
        assert failed, f"a READ from a stalled backing is still waiting:\n{stuck}"
        started = time.monotonic()
        served.stop()
        assert time.monotonic() - started < 20, "close() waited for the stalled backing"
        rmmod = guest.sh(
            "timeout -s KILL 20 rmmod vhba; echo rc=$?", timeout=60, check=False
        ).stdout
        assert "rc=137" not in rmmod, f"rmmod hung on the stalled backing:\n{stuck}"
    finally:
        fuse_backing.signal("USR2")
        guest.run(["rm", "-f", "/tmp/stalled.rc"])
        if guest.run(["grep", "-qw", "^vhba", "/proc/modules"], check=False).rc == 0:
            rmmod_eventually(guest)
        restart_drive(seat.cell)
        guest.sh("chgrp cdrom /dev/vhba_ctl && chmod 0660 /dev/vhba_ctl", check=False)


# Work items a module can hold on one CPU: a per-CPU workqueue's default limit
# (WQ_DFL_ACTIVE: 256 in 5.10-6.x). Enough stalled direct reads to pass it on
# every CPU, with a margin.
WQ_ACTIVE = 256
HOG_PER_DRIVE = 16  # our module's direct reads per drive (half its 32 slots)
# Our module's cap on direct reads in flight on all hosts together.  On a debug
# kernel under TCG the workqueue-filling size (34 drives, 544 stalled reads) had
# not finished after 25 min; there the test passes the cap instead (two drives
# over it): it cannot be red on a module without the cap, which the plain
# kernels show, but it runs the over-cap path under KASAN and lockdep.
DIRECT_CAP = 128


@pytest.mark.slow
def test_stalled_direct_reads_cannot_hold_up_another_users_direct_reads(
    fuse_backing: FuseBacking, seat: Seat
) -> None:
    """One seat user's drives whose backing never answers must not hold the direct
    reads of another user's drive: on a workqueue shared by all drives, enough
    stalled work items fill a CPU's share and the next ones wait for them."""
    guest = seat.cell.guest
    victim = seat.serve("victim", "--image", CD1, "--direct", user="root")
    said = guest.run(["grep", "^direct ", "/tmp/attacker-victim.out"]).stdout.split()
    if said[1:] == ["ENOTTY"]:
        pytest.skip("the module has no direct reads (an extension of ours)")
    cpus = int(guest.run(["nproc"]).stdout)
    stalled = DIRECT_CAP if debug_series(seat.cell.spec.kernel) else WQ_ACTIVE * cpus
    drives = -(-stalled // HOG_PER_DRIVE) + 2
    hog = ["runuser", "-u", SEAT_USER, "--", "python3", GUEST_ATTACKER, "hog",
           "--image", fuse_backing.image, "--drives", str(drives),
           "--per-drive", str(HOG_PER_DRIVE), "--go", "/tmp/hog.go"]  # fmt: skip
    guest.sh(f"rm -f /tmp/hog.go; nohup {command_text(hog)} >/tmp/hog.out 2>&1 &")
    try:
        # "opened", or the last line of an attacker that gave up (a traceback, an error)
        said = ["grep", "-q", "-e", "^opened", "-e", "Error", "-e", '"error"', "/tmp/hog.out"]
        guest.wait_for(said, timeout=300)
        if guest.run(["grep", "-q", "^opened", "/tmp/hog.out"], check=False).rc != 0:
            out = guest.run(["cat", "/tmp/hog.out"], check=False).stdout
            pytest.fail(f"the seat user's {drives} drives did not come up: {out[-800:]}")
        fuse_backing.signal("USR1")  # the backing stalls from here
        guest.run(["touch", "/tmp/hog.go"])
        guest.wait_for(["grep", "-q", "^hogging", "/tmp/hog.out"], timeout=120)
        slow = {}
        for cpu in range(cpus):
            dd = ["timeout", "60", "taskset", "-c", str(cpu), "dd", f"if={victim.sr}",
                  "of=/dev/null", "bs=2048", "count=1", f"skip={7 + cpu}",
                  "iflag=direct"]  # fmt: skip
            started = time.monotonic()
            result = guest.run(dd, timeout=90, check=False)
            took = time.monotonic() - started
            if result.rc != 0 or took > 10:
                slow[cpu] = f"{took:.1f} s, rc {result.rc}: {result.stderr.strip()[-200:]}"
        assert not slow, (
            f"while a seat user's {drives} drives had {drives * HOG_PER_DRIVE} direct reads "
            f"stalled on their backing, another drive's direct read on CPU n took: {slow}"
        )
    finally:
        fuse_backing.signal("USR2")
        guest.run(["pkill", "-TERM", "-f", f"{GUEST_ATTACKER} hog"], check=False)
        if not _wait_gone(seat.cell, ["pgrep", "-f", f"{GUEST_ATTACKER} hog"], 120):
            guest.run(["pkill", "-KILL", "-f", f"{GUEST_ATTACKER} hog"], check=False)
        victim.stop()
