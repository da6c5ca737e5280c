"""A hostile responder and its tools, run in the guest by the attacker group.

udev gives /dev/vhba_ctl to every user at a seat, so the module must survive a
responder written by someone who wants to break it.  This program is that
responder: a minimal CD drive (INQUIRY, TEST UNIT READY, READ CAPACITY, READ
from an optional image) that can be told to stall, to answer with status words
and sense lengths no honest drive sends, to name a backing the kernel must not
read, to race device-number reuse, or to run a seeded random campaign of
read()/write()/ioctl() calls.  Its findings are printed as one JSON object.

Stdlib only, Python >= 3.9 (the oldest guest is bullseye).  Runs as an
unprivileged user wherever the test allows it.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import json
import mmap
import os
import random
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

CTL = "/dev/vhba_ctl"
REQ = struct.Struct("=II16sB3xI")  # metatag, lun, cdb, cdb_len, data_len
RESP = struct.Struct("=III")  # metatag, status, data_len
DIRECT = struct.Struct("=iIQQ")  # fd, block_size, offset, blocks
IOCTL_GET_ADDRESS = 0x0BEEF001
IOCTL_GET_DEVNUM = 0x0BEEF002
IOCTL_SET_DIRECT_READ = (1 << 30) | (DIRECT.size << 16) | (0xBE << 8) | 0xD1
READ_BUF = REQ.size + 8192 * 512  # the module's largest command, any max_sectors
BLOCK = 2048
CHECK_CONDITION = 0x02
SG_IO = 0x2285


def errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def fixed_sense(key: int, asc: int, ascq: int = 0) -> bytes:
    sense = bytearray(18)
    sense[0], sense[2], sense[7], sense[12], sense[13] = 0x70, key, 10, asc, ascq
    return bytes(sense)


ILLEGAL_OPCODE = fixed_sense(0x05, 0x20)
NO_MEDIUM = fixed_sense(0x02, 0x3A)


class Drive:
    """One /dev/vhba_ctl fd served by a thread: the attacker's SCSI device.

    ``hostile`` maps an opcode to (status word, sense length) answers and
    ``short`` to a data-in length; ``paused`` stops the thread calling read()
    (commands stay queued in the kernel); every command read is logged with
    the pause phase it arrived in, so a test can tell what was handed out
    after it resumed.
    """

    def __init__(
        self, image: str | None = None, log: str | None = None, *, patience: float
    ) -> None:
        self.fd = os.open(CTL, os.O_RDWR | os.O_NONBLOCK)
        self.patience = patience  # scales waits on udev (a debug kernel's guest is slower)
        self.image_fd = os.open(image, os.O_RDONLY) if image else -1
        self.blocks = os.fstat(self.image_fd).st_size // BLOCK if image else 0
        self.log = open(log, "a", buffering=1) if log else None  # noqa: SIM115 (lives with the drive)
        self.hostile: dict[int, tuple] = {}
        self.short: dict[int, int] = {}
        self.mrw = False  # claim an MRW writer, so the cdrom layer registers its MRW exit hook
        self.disk = False  # claim to be a disk (peripheral type 0) and answer only INQUIRY
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.phase = 0
        self.pause_shown = False
        self.received: list[dict[str, Any]] = []
        self.write_errors: dict[str, int] = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)

    # ----------------------------------------------------------- identity
    def address(self) -> str:
        buf = fcntl.ioctl(self.fd, IOCTL_GET_ADDRESS, bytes(16))
        return ":".join(str(n) for n in struct.unpack("=4I", buf))

    def devnum(self) -> int:
        return struct.unpack("=I", fcntl.ioctl(self.fd, IOCTL_GET_DEVNUM, bytes(4)))[0]

    def node(self, kind: str, timeout: float | None = None) -> str:
        """/dev/srN ("block") or /dev/sgN ("generic") of this drive, once udev made it.

        ``timeout`` (default 30 s times the patience) is a bound a test sets itself.
        """
        if timeout is None:
            timeout = 30.0 * self.patience
        sysfs = "/sys/bus/scsi/devices/" + self.address()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if kind == "block":
                    name = os.listdir(sysfs + "/block")[0]
                else:
                    name = os.path.basename(os.readlink(sysfs + "/generic"))
                if os.path.exists("/dev/" + name):
                    return "/dev/" + name
            except (OSError, IndexError):
                pass
            time.sleep(0.05)
        raise SystemExit(f"no {kind} node for {self.address()} within {timeout:.0f} s")

    # ----------------------------------------------------------- serving
    def start(self) -> Drive:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        os.close(self.fd)

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self.stop.is_set():
            if self.paused.is_set():
                self._acknowledge_pause(True)
                time.sleep(0.02)
                continue
            self._acknowledge_pause(False)
            # A command that arrives while the pause is being set must stay
            # queued: the flag is checked again between poll() and read().
            if not poller.poll(100) or self.paused.is_set():
                continue
            try:
                buf = os.read(self.fd, READ_BUF)
            except BlockingIOError:
                continue
            except OSError as exc:
                self._note(errname(exc))
                continue
            tag, _lun, cdb, cdb_len, data_len = REQ.unpack_from(buf)
            cdb = cdb[:cdb_len]
            record = {
                "t": time.time(),
                "phase": self.phase,
                "op": cdb[0],
                "tag": tag,
                "lba": self._lba(cdb),
                "len": data_len,
                "payload": buf[REQ.size :],
            }
            self.received.append(record)
            if self.log:
                shown = {k: v for k, v in record.items() if k != "payload"}
                self.log.write(json.dumps(shown) + "\n")
            if self.disk and cdb[0] != 0x12:
                continue  # left unanswered: it times out
            self.answer(tag, cdb, data_len)

    def _acknowledge_pause(self, paused: bool) -> None:
        """Show the pause took hold: ``<log>.paused`` exists while no read() can start.

        A signal only sets the flag; the thread may be inside poll() at that
        moment.  Only the thread itself knows it is past every read, so it is
        the one that tells the test (which waits for the file).
        """
        if self.log is None or paused == self.pause_shown:
            return
        marker = self.log.name + ".paused"
        if paused:
            with open(marker, "w") as out:
                out.write(str(self.phase))
        elif os.path.exists(marker):
            os.unlink(marker)
        self.pause_shown = paused

    def _note(self, what: str) -> None:
        self.write_errors[what] = self.write_errors.get(what, 0) + 1

    @staticmethod
    def _lba(cdb: bytes) -> int | None:
        if cdb[0] in (0x28, 0xA8) and len(cdb) >= 6:
            return int.from_bytes(cdb[2:6], "big")
        return None

    def send(self, tag: int, status: int, body: bytes, declared: int | None = None) -> None:
        length = len(body) if declared is None else declared
        try:
            os.write(self.fd, RESP.pack(tag, status, length) + body)
        except OSError as exc:
            self._note(errname(exc))

    def answer(self, tag: int, cdb: bytes, data_len: int) -> None:
        op = cdb[0]
        if op in self.hostile:
            status, sense_len = self.hostile[op]
            body = (fixed_sense(0x03, 0x11) * 20)[: min(sense_len, 360)]
            self.send(tag, status, body, declared=sense_len)
            return
        data = self.data_for(cdb)
        if data is None:
            self.send(tag, CHECK_CONDITION, NO_MEDIUM if op == 0x00 else ILLEGAL_OPCODE)
            return
        if op in self.short:
            data = data[: self.short[op]]
        self.send(tag, 0, data[:data_len])

    def data_for(self, cdb: bytes) -> bytes | None:
        """The data-in of a command this minimal drive knows, or None (CHECK CONDITION)."""
        op = cdb[0]
        if op == 0x12:  # INQUIRY
            if cdb[1] & 1:
                return bytes([5, cdb[2], 0, 1, 0]) if cdb[2] == 0 else None
            ident = b"ATTACKERhostile drive   0.1 "
            kind = bytes([0, 0]) if self.disk else bytes([5, 0x80])  # disk, or removable CD/DVD
            return (kind + bytes([5, 2, 31, 0, 0, 0]) + ident)[: int.from_bytes(cdb[3:5], "big")]
        if op == 0x00:  # TEST UNIT READY
            return b"" if self.blocks else None
        if op == 0x25 and self.blocks:  # READ CAPACITY(10)
            return struct.pack(">II", self.blocks - 1, BLOCK)
        if op == 0x46 and self.mrw:  # GET CONFIGURATION: the MRW feature, Write set
            feature = bytes([0x00, 0x28, 0x03, 0x04, 0x01, 0, 0, 0])
            return struct.pack(">IHH", 4 + len(feature), 0, 0x0008) + feature
        if op == 0x5A and self.mrw and cdb[2] & 0x3F == 0x03:  # MODE SENSE(10): MRW page
            page = bytes([0x03, 0x06, 0, 0, 0, 0, 0, 0])
            return struct.pack(">HBB2xH", 6 + len(page), 0, 0, 0) + page
        if op in (0x28, 0xA8) and self.blocks:
            lba = self._lba(cdb) or 0
            count = int.from_bytes(cdb[7:9] if op == 0x28 else cdb[6:10], "big")
            return os.pread(self.image_fd, count * BLOCK, lba * BLOCK)
        return None

    def set_direct(self, fd: int, blocks: int) -> str:
        try:
            fcntl.ioctl(self.fd, IOCTL_SET_DIRECT_READ, DIRECT.pack(fd, BLOCK, 0, blocks))
        except OSError as exc:
            return errname(exc)
        return "ok"


# ----------------------------------------------------------------- SG_IO
class SgIoHdr(ctypes.Structure):
    _fields_ = [
        ("interface_id", ctypes.c_int), ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte), ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort), ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p), ("cmdp", ctypes.c_void_p), ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint), ("flags", ctypes.c_uint), ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p), ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte), ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte), ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort), ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint), ("info", ctypes.c_uint),
    ]  # fmt: skip


def sg_io(
    fd: int, cdb: bytes, data_in: int = 0, data_out: bytes = b"", timeout_ms: int = 5000
) -> dict[str, Any]:
    """One SCSI command through SG_IO; what came back, as the kernel reported it."""
    cdb_buf = ctypes.create_string_buffer(cdb, len(cdb))
    sense = ctypes.create_string_buffer(252)
    size = data_in or len(data_out)
    data = ctypes.create_string_buffer(data_out or b"\xa5" * size, max(size, 1))
    hdr = SgIoHdr(interface_id=ord("S"), cmd_len=len(cdb), mx_sb_len=252,
                  dxfer_direction=-3 if data_in else (-2 if data_out else -1),
                  dxfer_len=size, dxferp=ctypes.addressof(data) if size else None,
                  cmdp=ctypes.addressof(cdb_buf), sbp=ctypes.addressof(sense),
                  timeout=timeout_ms)  # fmt: skip
    started = time.monotonic()
    try:
        fcntl.ioctl(fd, SG_IO, hdr)
    except OSError as exc:
        return {"error": errname(exc), "seconds": time.monotonic() - started}
    return {"status": hdr.status, "host": hdr.host_status, "driver": hdr.driver_status,
            "sense_len": hdr.sb_len_wr, "resid": hdr.resid,
            "seconds": round(time.monotonic() - started, 3), "data": data.raw[:size]}  # fmt: skip


# ----------------------------------------------------------------- modes
def mode_serve(args: argparse.Namespace) -> dict[str, Any]:
    """Serve until SIGTERM; SIGUSR1 stops reading commands, SIGUSR2 resumes."""
    drive = Drive(args.image, args.log, patience=args.patience)
    for spec in args.hostile:
        op, status, sense_len = (int(x, 0) for x in spec.split(":"))
        drive.hostile[op] = (status, sense_len)
    for spec in args.short:
        op, nbytes = (int(x, 0) for x in spec.split(":"))
        drive.short[op] = nbytes
    drive.mrw = args.mrw

    def pause(_sig: int, _frame: Any) -> None:
        drive.paused.set()

    def resume(_sig: int, _frame: Any) -> None:
        drive.phase += 1
        drive.paused.clear()

    done = threading.Event()
    signal.signal(signal.SIGUSR1, pause)
    signal.signal(signal.SIGUSR2, resume)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    drive.start()
    if args.direct:
        print("direct", drive.set_direct(drive.image_fd, drive.blocks), flush=True)
    print("hctl", drive.address(), drive.node("block"), drive.node("generic"), flush=True)
    while not done.wait(0.2):
        pass
    drive.close()
    return {"received": len(drive.received), "write_errors": drive.write_errors}


def open_when_allowed(path: str, patience: float) -> int:
    """Open read-only; a new node is root's until udev has applied its group.

    Seen on 6.12-debug under TCG: udev took more than 10 s for it.
    """
    deadline = time.monotonic() + 10.0 * patience
    while True:
        try:
            return os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except PermissionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def mode_backing(args: argparse.Namespace) -> dict[str, Any]:
    """Ask the module to read each path directly; "@self" is this drive's own sr node."""
    drive = Drive(patience=args.patience).start()
    sr = drive.node("block")
    results = {}
    for path in args.paths:
        real = sr if path == "@self" else path
        try:
            fd = open_when_allowed(real, args.patience)
        except OSError as exc:
            results[path] = "open:" + errname(exc)
            continue
        results[path] = drive.set_direct(fd, 16)
        os.close(fd)
        if results[path] == "ok":
            drive.set_direct(-1, 0)  # nothing reads it: turning it off cannot wait
    drive.close()
    return {"sr": sr, "results": results}


def mode_reuse(args: argparse.Namespace) -> dict[str, Any]:
    """Close a busy device and open the next one at once: who gets the old commands?

    A sender keeps writing a secret to the first device through its sg node.
    A third opener that does not answer its INQUIRY keeps the module's device
    scan busy, so the first device's SCSI device outlives its fd for a while.
    The second opener, meanwhile, records every command it receives: none may
    carry the secret, those commands were addressed to a device that is gone.
    """
    first = Drive(patience=args.patience).start()
    sg = os.open(first.node("generic"), os.O_RDWR)
    first_num = first.devnum()
    secret = b"SECRET-OF-THE-FIRST-OPENER-" + os.urandom(8).hex().encode()
    stop = threading.Event()
    sent = [0]

    def sender() -> None:
        # WRITE BUFFER (mode 2, data): a data-out command every device may be sent.
        cdb = bytes([0x3B, 0x02, 0, 0, 0, 0, 0, 0, 64, 0])
        while not stop.is_set():
            sg_io(sg, cdb, data_out=secret.ljust(64, b"."), timeout_ms=1000)
            sent[0] += 1

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    while sent[0] < 20:
        time.sleep(0.01)
    blocker = Drive(patience=args.patience)
    blocker.paused.set()
    blocker.start()
    time.sleep(0.5)  # the scan now waits for the blocker's INQUIRY
    first.close()
    second = Drive(patience=args.patience).start()
    second_num = second.devnum()
    time.sleep(args.seconds)
    blocker.paused.clear()
    time.sleep(1)
    stop.set()
    thread.join(10)
    os.close(sg)
    second.close()
    blocker.close()
    leaked = [r for r in second.received if secret in r["payload"]]
    return {"first_num": first_num, "second_num": second_num, "sent": sent[0],
            "second_received": len(second.received), "secret_leaked": len(leaked),
            "first_received": len(first.received)}  # fmt: skip


def mode_scan(args: argparse.Namespace) -> dict[str, Any]:
    """A drive that never answers its INQUIRY, then a second opener: when does its drive appear?

    Adding a SCSI device holds its host's scan lock while INQUIRY and the
    upper drivers' probe commands go to the new drive's responder.  The
    first drive leaves its INQUIRY unanswered (it times out after 20 s, and
    the scan tries again); the second answers at once.  ``attached_s`` is how
    long the second drive took to get its block node, None if not within
    ``--seconds``.  Closing the first drive then fails its INQUIRY at once.
    """
    blocker = Drive(patience=args.patience)
    blocker.paused.set()
    blocker.start()
    time.sleep(1)  # its INQUIRY is queued by now, the scan waiting for it
    started = time.monotonic()
    other = Drive(patience=args.patience).start()
    try:
        other.node("block", timeout=args.seconds)
        attached: float | None = round(time.monotonic() - started, 3)
    except SystemExit:
        attached = None
    addresses = {"blocker": blocker.address(), "other": other.address()}
    blocker.close()
    other.node("block", timeout=60)  # leave no scan behind
    other.close()
    return {"attached_s": attached, "waited_s": args.seconds, **addresses}


def mode_pin(args: argparse.Namespace) -> dict[str, Any]:
    """A drive's /dev/srN held open past its fd's close: is its device number handed out meanwhile?

    The held node keeps the closed drive's SCSI host alive (its error
    handler thread, its workqueue), removed but not freed.  The module caps
    how many hosts exist by device numbers, so a number must stay taken
    until its host is freed: else a user who holds each drive's node and
    closes its fd, over and over, makes hosts without end.
    """
    first = Drive(patience=args.patience).start()
    first_num = first.devnum()
    host = first.address().split(":")[0]
    held = open_when_allowed(first.node("block"), args.patience)
    first.close()
    removed = wait_for(f"/sys/class/scsi_host/host{host}", 15 * args.patience, gone=True)
    second = Drive(patience=args.patience).start()
    second_num = second.devnum()
    same_host = second.address().split(":")[0] == host
    second.close()
    os.close(held)
    return {"first_num": first_num, "second_num": second_num, "host_removed": removed,
            "same_host": same_host}  # fmt: skip


def mode_disk(args: argparse.Namespace) -> dict[str, Any]:
    """A drive that claims to be a disk, then answers nothing: does loading a module wait for it?

    sd probes disks asynchronously, and every module load (and boot's wait
    for device probes) waits for all asynchronous probes to end: one
    responder that stalls sd's probe commands would hold up every modprobe
    on the machine.  ``modprobe_s`` is how long loading ``--module`` took,
    None if more than ``--seconds``; the drive is closed then (its commands
    fail, whatever probe waits for them ends), and the module unloaded.
    """
    drive = Drive(patience=args.patience)
    drive.disk = True
    drive.start()
    time.sleep(3)  # scanned by now: INQUIRY answered, whatever probes it is waiting
    started = time.monotonic()
    load = subprocess.Popen(["modprobe", args.module])
    took: float | None = None
    try:
        rc: int | None = load.wait(args.seconds)
        took = round(time.monotonic() - started, 3)
    except subprocess.TimeoutExpired:
        rc = None
    address = drive.address()
    unanswered = len([r for r in drive.received if r["op"] != 0x12])
    drive.close()
    if rc is None:
        rc = load.wait(120)
    subprocess.run(["modprobe", "-r", args.module], check=False)
    return {"modprobe_s": took, "rc": rc, "waited_s": args.seconds,
            "drive": address, "unanswered": unanswered}  # fmt: skip


def mode_flood(args: argparse.Namespace) -> dict[str, Any]:
    """Many O_DIRECT block reads of a drive at once, one fd and thread each.

    Every fd is opened before the test stalls the drive (open() sends its own
    commands and serialises on the drive's mutex); once ``--go`` exists, all
    threads read at once, so a stalled drive really holds ``count`` commands.
    """
    fds = [os.open(args.node, os.O_RDONLY | os.O_DIRECT) for _ in range(args.count)]
    print("opened", flush=True)
    if not wait_for(args.go, 120):
        return {"error": "never told to read"}
    results: list[str] = []

    def one(fd: int, lba: int) -> None:
        buf = mmap.mmap(-1, BLOCK)
        try:
            results.append(f"read {os.preadv(fd, [buf], lba * BLOCK)}")
        except OSError as exc:
            results.append(errname(exc))

    threads = [threading.Thread(target=one, args=(fd, i * 3)) for i, fd in enumerate(fds)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for fd in fds:
        os.close(fd)
    return {"count": args.count, "good": results.count(f"read {BLOCK}")}


def mode_hog(args: argparse.Namespace) -> dict[str, Any]:
    """Drives whose direct reads all go to one backing (the test stalls it), each
    read by ``--per-drive`` O_DIRECT commands at once, the reading threads spread
    over every CPU: the work items of a module's direct reads pile up on every
    CPU.  Prints "opened" once the drives are up, reads once ``--go`` exists,
    prints "hogging" once every read is issued, and returns when they end."""
    drives = []
    for _ in range(args.drives):
        drive = Drive(args.image, patience=args.patience).start()
        state = drive.set_direct(drive.image_fd, drive.blocks)
        if state != "ok":
            return {"error": f"direct reads refused: {state}"}
        drives.append(drive)
    fds = []
    for drive in drives:
        node = drive.node("block")
        deadline = time.monotonic() + 60 * args.patience  # udev is slow with dozens of new drives
        while True:
            try:
                fds += [os.open(node, os.O_RDONLY | os.O_DIRECT) for _ in range(args.per_drive)]
                break
            except PermissionError:  # a new node is root's until udev has applied its group
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    print("opened", flush=True)
    if not wait_for(args.go, 120):
        return {"error": "never told to read"}
    cpus = sorted(os.sched_getaffinity(0))
    results: list[str] = []

    def one(index: int, fd: int) -> None:
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})  # this thread only
        buf = mmap.mmap(-1, BLOCK)
        try:
            results.append(f"read {os.preadv(fd, [buf], (index % 64) * 4 * BLOCK)}")
        except OSError as exc:
            results.append(errname(exc))

    threads = [threading.Thread(target=one, args=(i, fd), daemon=True) for i, fd in enumerate(fds)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    print("hogging", len(threads), flush=True)
    deadline = time.monotonic() + args.seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {"reads": len(threads), "ended": len(results), "cpus": len(cpus)}


def wait_for(path: str, timeout: float, gone: bool = False) -> bool:
    """Whether ``path`` exists (or, with ``gone``, no longer does) within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while os.path.exists(path) == gone:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def mode_pread(args: argparse.Namespace) -> dict[str, Any]:
    """One O_DIRECT block read of a drive, watched before and after it ends.

    The node is opened first (open() sends its own commands, which a stalled
    drive would hold for their long timeouts), then the test stalls the drive
    and touches ``--go``.  The read lands straight in this process's buffer,
    filled with a sentinel; after the read has ended and the test touched
    ``--after``, the buffer is checked again: a module that wrote a late
    answer into the pages of a finished request changed it.
    """
    fd = os.open(args.node, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)
    sentinel = b"\x5a" * BLOCK
    buf.write(sentinel)
    print("opened", flush=True)
    if not wait_for(args.go, 120):
        return {"error": "never told to read"}
    started = time.monotonic()
    try:
        got = os.preadv(fd, [buf], args.lba * BLOCK)
        outcome = f"read {got}"
    except OSError as exc:
        outcome = errname(exc)
    seconds = round(time.monotonic() - started, 1)
    with open(args.go + ".done", "w") as done:
        done.write(outcome)
    failed_untouched = buf[:] == sentinel
    wait_for(args.after, 120)
    time.sleep(3)
    late = outcome != f"read {BLOCK}" and failed_untouched and buf[:] != sentinel
    os.close(fd)
    return {"outcome": outcome, "seconds": seconds, "late_write": late,
            "head": buf[:16].hex()}  # fmt: skip


def mode_watch(args: argparse.Namespace) -> dict[str, Any]:
    """O_DIRECT block reads of a drive, one every ``--every`` s for ``--seconds``: how long the
    slowest took, and how many failed (a drive whose host stopped for recovery stalls them)."""
    fd = os.open(args.node, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)
    reads, failed, worst = 0, 0, 0.0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            os.preadv(fd, [buf], (1000 + reads % 64) * BLOCK)
        except OSError:
            failed += 1
        worst = max(worst, time.monotonic() - started)
        reads += 1
        time.sleep(args.every)
    os.close(fd)
    return {"reads": reads, "failed": failed, "worst_s": round(worst, 3)}


def mode_probe(args: argparse.Namespace) -> dict[str, Any]:
    """One SG_IO command to a node, e.g. a READ(10) the hostile drive answers."""
    fd = os.open(args.node, os.O_RDWR | os.O_NONBLOCK)
    try:
        out = sg_io(fd, bytes.fromhex(args.cdb), data_in=args.data_in, timeout_ms=args.timeout_ms)
    finally:
        os.close(fd)
    data = out.pop("data", b"")
    out["data_head"] = data[:16].hex()
    return out


def mode_fuzz(args: argparse.Namespace) -> dict[str, Any]:
    """A seeded random campaign of read()/write()/ioctl()/poll() on control fds.

    Everything is drawn from ``random.Random(seed)``, so a failing seed replays
    the same calls (timing between threads aside).  Returns how many calls were
    made and how the kernel answered them, by errno.
    """
    rng = random.Random(args.seed)
    fds: list[int] = []
    tags: list[int] = []
    answers: dict[str, int] = {}
    ops = 0
    deadline = time.monotonic() + args.seconds

    def outcome(name: str, call: Any, *args: Any) -> None:
        try:
            call(*args)
            key = name + ":ok"
        except OSError as exc:
            key = name + ":" + errname(exc)
        answers[key] = answers.get(key, 0) + 1

    def size() -> int:
        return rng.choice([0, 1, 11, 12, 13, 31, 32, 33, 44, 96, 108, 109, 4096, 65536,
                           rng.randrange(0, 140000)])  # fmt: skip

    def do_read(fd: int) -> None:
        buf = os.read(fd, size())
        if len(buf) >= REQ.size:
            tags.append(REQ.unpack_from(buf)[0])

    while ops < args.ops and time.monotonic() < deadline:
        ops += 1
        if not fds or (len(fds) < 4 and rng.random() < 0.05):
            outcome("open", lambda: fds.append(os.open(CTL, os.O_RDWR | os.O_NONBLOCK)))
            continue
        fd = rng.choice(fds)
        choice = rng.random()
        if choice < 0.3:
            outcome("read", do_read, fd)
        elif choice < 0.65:
            tag = rng.choice(tags) if tags and rng.random() < 0.7 else rng.getrandbits(32)
            status = rng.choice([0, 0, 2, 8, 0x18, 0x28, 0x10000, 0xD0000, 0x7000002,
                                 rng.getrandbits(32)])  # fmt: skip
            declared = rng.choice([0, 1, 17, 18, 95, 96, 97, 252, 2048, 0xFFFFFFFF,
                                   rng.getrandbits(32)])  # fmt: skip
            body = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 18, 96, 200])))
            body += bytes(rng.choice([0, 36, 2048, 4096, 65536]))
            packet = RESP.pack(tag, status, declared) + body
            packet = packet[: rng.choice([len(packet), len(packet), rng.randrange(0, 13)])]
            outcome("write", os.write, fd, packet)
        elif choice < 0.85:
            request = rng.choice([IOCTL_GET_ADDRESS, IOCTL_GET_DEVNUM, IOCTL_SET_DIRECT_READ,
                                  0x0BEEF003, rng.getrandbits(31)])  # fmt: skip
            if request == IOCTL_SET_DIRECT_READ:
                arg = DIRECT.pack(rng.choice([-1, -1, fd, 0, 1, 9999]),
                                  rng.choice([0, 511, 512, 2048, 4096, 8192]),
                                  rng.choice([0, 2048, 2**63, 2**64 - 1]),
                                  rng.choice([0, 1, 2**40, 2**64 - 1]))  # fmt: skip
            else:
                # A raw ioctl number carries no size: the kernel sees a NULL
                # pointer or a buffer, and a buffer shorter than what the ioctl
                # writes (GET_ADDRESS: 16 bytes) is the caller's own bug (Python
                # 3.14's fcntl.ioctl says "SystemError: buffer overflow").
                arg = bytes(64) if rng.random() < 0.8 else b""
            outcome("ioctl", fcntl.ioctl, fd, request, arg or 0)
        elif choice < 0.95:
            outcome("poll", select.select, [fd], [fd], [], 0)
        else:
            fds.remove(fd)
            outcome("close", os.close, fd)
    for fd in fds:
        os.close(fd)
    return {"seed": args.seed, "ops": ops, "answers": answers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    # After the mode, so "attacker.py serve" stays the serving processes' name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--patience", type=float, default=1.0,
                        help="scale for waits on udev (the lab's guest patience)")  # fmt: skip
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("serve", parents=[common])
    p.add_argument("--name", help="only for finding this drive's process")
    p.add_argument("--image")
    p.add_argument("--log")
    p.add_argument("--direct", action="store_true", help="serve READs from the image in-kernel")
    p.add_argument("--hostile", action="append", default=[], metavar="OP:STATUS:SENSELEN")
    p.add_argument("--short", action="append", default=[], metavar="OP:BYTES")
    p.add_argument("--mrw", action="store_true", help="claim MRW writing (feature 0x28, page 3)")
    p = sub.add_parser("backing", parents=[common])
    p.add_argument("paths", nargs="+")
    p = sub.add_parser("reuse", parents=[common])
    p.add_argument("--seconds", type=float, default=3.0)
    p = sub.add_parser("pread", parents=[common])
    p.add_argument("node")
    p.add_argument("--lba", type=int, required=True)
    p.add_argument("--go", required=True, help="read once this file exists")
    p.add_argument("--after", required=True, help="check the buffer once this file exists")
    p = sub.add_parser("scan", parents=[common])
    p.add_argument("--seconds", type=float, default=15.0)
    sub.add_parser("pin", parents=[common])
    p = sub.add_parser("disk", parents=[common])
    p.add_argument("--module", required=True, help="a module not loaded, to load meanwhile")
    p.add_argument("--seconds", type=float, default=20.0)
    p = sub.add_parser("flood", parents=[common])
    p.add_argument("node")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--go", required=True, help="read once this file exists")
    p = sub.add_parser("hog", parents=[common])
    p.add_argument("--image", required=True)
    p.add_argument("--drives", type=int, required=True)
    p.add_argument("--per-drive", type=int, default=16)
    p.add_argument("--go", required=True, help="read once this file exists")
    p.add_argument("--seconds", type=float, default=180.0, help="wait this long for the reads")
    p = sub.add_parser("watch", parents=[common])
    p.add_argument("node")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--every", type=float, default=0.2)
    p = sub.add_parser("probe", parents=[common])
    p.add_argument("node")
    p.add_argument("cdb", help="hex")
    p.add_argument("--data-in", type=int, default=0)
    p.add_argument("--timeout-ms", type=int, default=5000)
    p = sub.add_parser("fuzz", parents=[common])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--ops", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    modes = {"serve": mode_serve, "backing": mode_backing, "reuse": mode_reuse,
             "scan": mode_scan, "disk": mode_disk, "pin": mode_pin,
             "probe": mode_probe, "flood": mode_flood, "hog": mode_hog,
             "pread": mode_pread, "watch": mode_watch, "fuzz": mode_fuzz}  # fmt: skip
    print(json.dumps(modes[args.mode](args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
