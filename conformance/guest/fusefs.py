#!/usr/bin/env python3
"""A tiny FUSE filesystem whose one file says who read it, and that can stall.

Guest-side helper for the direct-reads tests: the module reads a responder's
backing file from a kernel work item, and the tests need to see *which
credentials* that read carried and what happens while the backing store hangs.
A FUSE server can observe both, because every request it receives carries the
reader's uid/gid/pid in its ``fuse_in_header``.

The filesystem has one regular file, ``image`` (mode 0444, ``--size`` bytes).
Each 2048-byte block at file offset ``o`` starts with::

    uid=%010d gid=%010d pid=%010d blk=%010d\\n

(the READ request's uid/gid/pid and ``o // 2048``), the rest of the block is
zero.  ``image`` is opened with ``FOPEN_DIRECT_IO`` so no read is ever served
from the page cache: a ``kernel_read()`` on a ``struct file`` (a kvec
iterator) reaches this server just like a ``read(2)`` does.

Signals:

- SIGUSR1: stall, i.e. keep READ requests queued instead of answering them
  (all other requests are still answered, the device keeps being read);
- SIGUSR2: answer every queued READ and stop stalling;
- SIGTERM/SIGINT: answer every queued READ, ``umount2(MNT_DETACH)``, keep
  answering files still open for up to 2 s (so just-released readers can
  close cleanly; a second SIGTERM skips this), close /dev/fuse, exit 0.

A FUSE_INTERRUPT for a queued READ is answered with -EINTR, so a reader that
gets a fatal signal while stalled dies instead of sitting in D state (the
kernel waits uninterruptibly for a request it has already handed to us).

Stdlib only, no libfuse, no fusermount: the guest images carry neither.  The
protocol is spoken directly on ``/dev/fuse`` and the mount done with
``mount(2)`` through ctypes, so this must run as root.

Usage: ``python3 fusefs.py MOUNTPOINT [--size N] [--pidfile F] [--verbose]``.
Prints ``ready`` on stdout once the kernel's INIT was answered (the mount is
live then); logs one line per request to stderr with ``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import signal
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

BLOCK = 2048
DEFAULT_SIZE = 4 * 1024 * 1024
BLOCK_HEADER = b"uid=%010d gid=%010d pid=%010d blk=%010d\n"

ROOT_ID = 1  # FUSE_ROOT_ID
IMAGE_ID = 2
IMAGE_NAME = b"image"
FH_IMAGE = 1
FH_ROOT = 2

# Protocol version we speak: the kernel's major must be 7; we take the lower of
# its minor and ours.  7.31 (kernel 5.7) covers everything used here; older
# kernels (3.16 is 7.23) negotiate down and get the matching INIT reply size.
KERNEL_MAJOR = 7
OUR_MINOR = 31
MAX_WRITE = 128 * 1024
# The kernel refuses reads of /dev/fuse with a buffer smaller than
# in_header + write_in + max_write, so leave generous room.
READ_BUFFER = MAX_WRITE + 64 * 1024

# fuse_opcode (include/uapi/linux/fuse.h)
FUSE_LOOKUP = 1
FUSE_FORGET = 2
FUSE_GETATTR = 3
FUSE_OPEN = 14
FUSE_READ = 15
FUSE_STATFS = 17
FUSE_RELEASE = 18
FUSE_GETXATTR = 22
FUSE_LISTXATTR = 23
FUSE_FLUSH = 25
FUSE_INIT = 26
FUSE_OPENDIR = 27
FUSE_READDIR = 28
FUSE_RELEASEDIR = 29
FUSE_ACCESS = 34
FUSE_INTERRUPT = 36
FUSE_DESTROY = 38
FUSE_BATCH_FORGET = 42

OPCODE_NAMES = {
    value: name[5:]
    for name, value in dict(globals()).items()
    if name.startswith("FUSE_") and isinstance(value, int)
}

FUSE_ASYNC_READ = 1 << 0  # INIT flag
FOPEN_DIRECT_IO = 1 << 0  # fuse_open_out.open_flags

DT_DIR = 4
DT_REG = 8

# mount(2) / umount2(2)
MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2

# Wire structs.  "=" is native byte order with standard sizes and *no*
# implicit alignment, so every padding field of the C layout is spelled out.
IN_HEADER = struct.Struct("=IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen pad
OUT_HEADER = struct.Struct("=IiQ")  # len error unique
INIT_IN = struct.Struct("=IIII")  # major minor max_readahead flags (flags2... ignored)
# major minor max_readahead flags max_background congestion_threshold max_write
# time_gran max_pages map_alignment flags2 max_stack_depth request_timeout unused[11]
INIT_OUT = struct.Struct("=IIIIHHIIHHIIH22x")
FUSE_COMPAT_INIT_OUT_SIZE = 8  # minor < 5
FUSE_COMPAT_22_INIT_OUT_SIZE = 24  # minor < 23
# ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink uid
# gid rdev blksize flags
ATTR = struct.Struct("=QQQQQQIIIIIIIIII")
ATTR_COMPAT_SIZE = 80  # minor < 9: no blksize/flags
ENTRY_OUT_HEAD = struct.Struct("=QQQQII")  # nodeid generation entry_valid attr_valid *_nsec
ATTR_OUT_HEAD = struct.Struct("=QII")  # attr_valid attr_valid_nsec dummy
OPEN_IN = struct.Struct("=II")  # flags open_flags
OPEN_OUT = struct.Struct("=QIi")  # fh open_flags backing_id
READ_IN = struct.Struct("=QQII")  # fh offset size read_flags (lock_owner... ignored)
ACCESS_IN = struct.Struct("=II")  # mask padding
INTERRUPT_IN = struct.Struct("=Q")  # unique
# blocks bfree bavail files ffree bsize namelen frsize padding spare[6]
KSTATFS = struct.Struct("=QQQQQIIII24x")
FUSE_COMPAT_STATFS_SIZE = 48  # minor < 4
DIRENT = struct.Struct("=QQII")  # ino off namelen type, then name padded to 8

ATTR_TTL_S = 1
# After SIGTERM and the lazy unmount: how long to keep answering files that are
# still open (FLUSH/RELEASE of readers just released) before giving up on them.
LINGER_S = 2.0
ENTRY_TTL_S = 1


def block_bytes(uid: int, gid: int, pid: int, offset: int, size: int, total: int) -> bytes:
    """The logical content of ``image[offset:offset+size]`` as read by uid/gid/pid.

    Built per request because the content depends on the reader; only the
    blocks the request touches are rendered, then sliced so unaligned and
    partial reads see exactly the bytes a plain file would have there.
    """
    end = min(offset + size, total)
    if offset >= end:
        return b""
    first = offset // BLOCK
    last = (end - 1) // BLOCK
    rendered = b"".join(
        (BLOCK_HEADER % (uid, gid, pid, blk)).ljust(BLOCK, b"\0") for blk in range(first, last + 1)
    )
    start = offset - first * BLOCK
    return rendered[start : start + (end - offset)]


@dataclass
class Request:
    """One request read from /dev/fuse: the decoded header plus its argument bytes."""

    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    body: bytes

    @classmethod
    def parse(cls, buf: bytes) -> Request:
        length, opcode, unique, nodeid, uid, gid, pid, _ext, _pad = IN_HEADER.unpack_from(buf)
        return cls(opcode, unique, nodeid, uid, gid, pid, bytes(buf[IN_HEADER.size : length]))

    def describe(self) -> str:
        name = OPCODE_NAMES.get(self.opcode, str(self.opcode))
        return (
            f"{name} unique={self.unique} nodeid={self.nodeid} "
            f"uid={self.uid} gid={self.gid} pid={self.pid}"
        )


class Libc:
    """mount(2)/umount2(2) through ctypes: there is no fusermount in the guest."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._lib.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self._lib.mount.restype = ctypes.c_int
        self._lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self._lib.umount2.restype = ctypes.c_int

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        if self._lib.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()):
            err = ctypes.get_errno()
            raise OSError(err, f"mount {target}: {os.strerror(err)}")

    def umount_detach(self, target: str) -> int:
        """Lazy unmount; returns 0 or the errno (EINVAL: nothing mounted there any more)."""
        if self._lib.umount2(target.encode(), MNT_DETACH):
            return ctypes.get_errno()
        return 0


def open_fuse_device() -> int:
    """Open /dev/fuse, loading the module / creating the node if the guest lacks them."""
    if not os.path.exists("/dev/fuse"):
        subprocess.run(["modprobe", "fuse"], check=False, capture_output=True)
    if not os.path.exists("/dev/fuse"):
        os.mknod("/dev/fuse", stat.S_IFCHR | 0o666, os.makedev(10, 229))
    # Non-blocking: select() says when a request is there, and a request can
    # vanish between the wakeup and the read (interrupted before we took it).
    return os.open("/dev/fuse", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


class FuseServer:
    """Single-threaded request loop; READs can be parked while other requests flow."""

    def __init__(self, mountpoint: str, size: int, verbose: bool, pidfile: str | None) -> None:
        self.mountpoint = os.path.abspath(mountpoint)
        self.size = size
        self.verbose = verbose
        self.pidfile = pidfile
        self.libc = Libc()
        self.fd = -1
        self.minor = OUR_MINOR
        self.initialized = False
        self.stalled = False
        # SIGTERM/SIGINT seen so far: the first starts the shutdown, a second
        # one cuts the linger phase short.
        self.stop_requests = 0
        self.lingering = False
        self.mounted = False
        # The connection is gone (unmounted and released, or aborted).
        self.gone = False
        # unique -> READ request, in arrival order (dicts keep insertion order).
        self.queued: dict[int, Request] = {}
        self.started = int(time.time())
        self.handlers = {
            FUSE_INIT: self.op_init,
            FUSE_LOOKUP: self.op_lookup,
            FUSE_GETATTR: self.op_getattr,
            FUSE_OPEN: self.op_open,
            FUSE_READ: self.op_read,
            FUSE_RELEASE: self.op_ok,
            FUSE_FLUSH: self.op_ok,
            FUSE_OPENDIR: self.op_opendir,
            FUSE_READDIR: self.op_readdir,
            FUSE_RELEASEDIR: self.op_ok,
            FUSE_STATFS: self.op_statfs,
            FUSE_ACCESS: self.op_access,
            FUSE_INTERRUPT: self.op_interrupt,
            FUSE_DESTROY: self.op_ok,
            FUSE_FORGET: self.op_forget,
            FUSE_BATCH_FORGET: self.op_forget,
        }

    # -- plumbing ---------------------------------------------------------

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"fusefs: {message}", file=sys.stderr, flush=True)

    def reply(self, req: Request, payload: bytes = b"", error: int = 0) -> None:
        """Answer one request; a negative errno goes out with no payload."""
        if error:
            payload = b""
        out = OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error if error else 0, req.unique)
        try:
            os.write(self.fd, out + payload)
        except OSError as exc:
            # ENOENT: the kernel already dropped the request (its caller died
            # and it was never waited for); nothing to do.
            if exc.errno in (errno.ENODEV, errno.ECONNABORTED):
                self.gone = True
            self.log(f"reply to unique={req.unique} failed: {exc.strerror}")

    def attr_bytes(self, nodeid: int) -> bytes:
        if nodeid == ROOT_ID:
            mode, nlink, size = stat.S_IFDIR | 0o555, 2, 0
        else:
            mode, nlink, size = stat.S_IFREG | 0o444, 1, self.size
        t = self.started
        packed = ATTR.pack(
            nodeid, size, (size + 511) // 512, t, t, t, 0, 0, 0, mode, nlink, 0, 0, 0, BLOCK, 0
        )
        return packed if self.minor >= 9 else packed[:ATTR_COMPAT_SIZE]

    # -- opcodes ----------------------------------------------------------

    def op_init(self, req: Request) -> None:
        major, minor, max_readahead, flags = INIT_IN.unpack_from(req.body)
        if major > KERNEL_MAJOR:
            # Protocol rule: answer with our major only; the kernel re-sends INIT.
            self.reply(req, struct.pack("=II", KERNEL_MAJOR, OUR_MINOR))
            return
        if major < KERNEL_MAJOR:
            self.reply(req, error=errno.EPROTO)
            self.gone = True
            return
        self.minor = min(minor, OUR_MINOR)
        out = INIT_OUT.pack(
            KERNEL_MAJOR,
            self.minor,
            max_readahead,
            flags & FUSE_ASYNC_READ,
            0,  # max_background: kernel default
            0,  # congestion_threshold: kernel default
            MAX_WRITE,
            1,  # time_gran (ns)
            0,  # max_pages: unused without FUSE_MAX_PAGES
            0,
            0,
            0,
            0,
        )
        # The reply must not be longer than the kernel's fuse_init_out for the
        # negotiated minor: 8 bytes before 7.5, 24 before 7.23, 64 since.
        if self.minor < 5:
            out = out[:FUSE_COMPAT_INIT_OUT_SIZE]
        elif self.minor < 23:
            out = out[:FUSE_COMPAT_22_INIT_OUT_SIZE]
        self.reply(req, out)
        self.initialized = True
        self.log(f"INIT kernel 7.{minor}, using 7.{self.minor}")
        print("ready", flush=True)

    def op_lookup(self, req: Request) -> None:
        name = req.body.split(b"\0", 1)[0]
        if req.nodeid != ROOT_ID:
            self.reply(req, error=errno.ENOTDIR)
            return
        if name != IMAGE_NAME:
            self.reply(req, error=errno.ENOENT)
            return
        head = ENTRY_OUT_HEAD.pack(IMAGE_ID, 0, ENTRY_TTL_S, ATTR_TTL_S, 0, 0)
        self.reply(req, head + self.attr_bytes(IMAGE_ID))

    def op_getattr(self, req: Request) -> None:
        if req.nodeid not in (ROOT_ID, IMAGE_ID):
            self.reply(req, error=errno.ENOENT)
            return
        self.reply(req, ATTR_OUT_HEAD.pack(ATTR_TTL_S, 0, 0) + self.attr_bytes(req.nodeid))

    def op_open(self, req: Request) -> None:
        flags, _open_flags = OPEN_IN.unpack_from(req.body)
        if req.nodeid == ROOT_ID:
            self.reply(req, error=errno.EISDIR)
        elif req.nodeid != IMAGE_ID:
            self.reply(req, error=errno.ENOENT)
        elif flags & os.O_ACCMODE != os.O_RDONLY:
            self.reply(req, error=errno.EACCES)
        else:
            # DIRECT_IO: no page cache, so every read (kernel_read() included)
            # becomes a READ request that carries its reader's credentials.
            self.reply(req, OPEN_OUT.pack(FH_IMAGE, FOPEN_DIRECT_IO, 0))

    def op_read(self, req: Request) -> None:
        if req.nodeid != IMAGE_ID:
            self.reply(req, error=errno.EISDIR)
            return
        if self.stalled:
            self.queued[req.unique] = req
            self.log(f"  queued ({len(self.queued)} stalled)")
            return
        self.answer_read(req)

    def answer_read(self, req: Request) -> None:
        _fh, offset, size, _flags = READ_IN.unpack_from(req.body)
        data = block_bytes(req.uid, req.gid, req.pid, offset, size, self.size)
        self.log(f"  READ unique={req.unique} off={offset} size={size} -> {len(data)}")
        self.reply(req, data)

    def op_opendir(self, req: Request) -> None:
        if req.nodeid != ROOT_ID:
            self.reply(req, error=errno.ENOTDIR)
            return
        self.reply(req, OPEN_OUT.pack(FH_ROOT, 0, 0))

    def op_readdir(self, req: Request) -> None:
        _fh, offset, size, _flags = READ_IN.unpack_from(req.body)
        entries = [
            (ROOT_ID, b".", DT_DIR),
            (ROOT_ID, b"..", DT_DIR),
            (IMAGE_ID, IMAGE_NAME, DT_REG),
        ]
        out = bytearray()
        # The offset handed back in each dirent is where the *next* readdir
        # continues: here simply the index of the following entry.
        for index in range(offset, len(entries)):
            ino, name, kind = entries[index]
            record = DIRENT.pack(ino, index + 1, len(name), kind) + name
            record += b"\0" * (-len(record) % 8)
            if len(out) + len(record) > size:
                break
            out += record
        self.reply(req, bytes(out))

    def op_statfs(self, req: Request) -> None:
        blocks = self.size // BLOCK
        out = KSTATFS.pack(blocks, 0, 0, 2, 0, BLOCK, 255, BLOCK, 0)
        self.reply(req, out if self.minor >= 4 else out[:FUSE_COMPAT_STATFS_SIZE])

    def op_access(self, req: Request) -> None:
        mask, _pad = ACCESS_IN.unpack_from(req.body)
        denied = os.W_OK | (os.X_OK if req.nodeid == IMAGE_ID else 0)
        self.reply(req, error=errno.EACCES if mask & denied else 0)

    def op_interrupt(self, req: Request) -> None:
        (target,) = INTERRUPT_IN.unpack_from(req.body)
        victim = self.queued.pop(target, None)
        if victim is None:
            # Already answered: the interrupt needs no reply at all.
            self.log(f"  interrupt for unique={target}: not queued, ignored")
            return
        self.log(f"  interrupt for unique={target}: answered -EINTR")
        self.reply(victim, error=errno.EINTR)

    def op_forget(self, req: Request) -> None:
        """FORGET and BATCH_FORGET must never be answered; inodes are static anyway."""

    def op_ok(self, req: Request) -> None:
        self.reply(req)

    # -- signals and the loop --------------------------------------------

    def release_queued(self) -> None:
        queued, self.queued = self.queued, {}
        for req in queued.values():
            self.answer_read(req)

    def on_signal(self, signum: int) -> None:
        self.log(f"signal {signal.Signals(signum).name}")
        if signum == signal.SIGUSR1:
            self.stalled = not self.lingering
        elif signum == signal.SIGUSR2:
            self.stalled = False
            self.release_queued()
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self.stop_requests += 1

    def handle(self, buf: bytes) -> None:
        req = Request.parse(buf)
        self.log(req.describe())
        handler = self.handlers.get(req.opcode)
        if handler is None:
            self.reply(req, error=errno.ENOSYS)
        else:
            handler(req)

    def drain_device(self) -> None:
        """Handle every request the kernel has queued right now."""
        while not self.gone:
            try:
                buf = os.read(self.fd, READ_BUFFER)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOENT:  # request interrupted before we got it
                    continue
                if exc.errno in (errno.ENODEV, errno.ECONNABORTED):
                    # Unmounted and released, or aborted: nobody will ask again.
                    self.log(f"connection gone ({errno.errorcode[exc.errno]})")
                    self.gone = True
                    return
                raise
            self.handle(buf)

    def serve(self, wake_fd: int, stop_after: int, deadline: float | None = None) -> None:
        """Answer requests and signals until ``stop_after`` stop signals, the deadline, or EOF."""
        while not self.gone and self.stop_requests < stop_after:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return
            readable, _, _ = select.select([self.fd, wake_fd], [], [], timeout)
            if wake_fd in readable:
                with contextlib.suppress(BlockingIOError):
                    for signum in os.read(wake_fd, 256):
                        self.on_signal(signum)
            if self.fd in readable and self.stop_requests < stop_after:
                self.drain_device()

    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # The C-level handler writes the signal number to the pipe, so select()
        # wakes up even though Python would otherwise just retry it on EINTR.
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
        if self.pidfile:
            with open(self.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        os.makedirs(self.mountpoint, exist_ok=True)
        self.fd = open_fuse_device()
        options = (
            f"fd={self.fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()},allow_other"
        )
        # mount(2) returns before INIT is answered: the kernel queues INIT on
        # the device, and "ready" is printed once we have replied to it.
        self.libc.mount("fusefs", self.mountpoint, "fuse.fusefs", MS_NOSUID | MS_NODEV, options)
        self.mounted = True
        self.log(f"mounted on {self.mountpoint} ({options})")
        try:
            self.serve(wake_r, stop_after=1)
            self.stalled = False
            self.lingering = True
            self.release_queued()
            self.unmount()
            # A detached mount lives on while files on it are open, and the
            # readers we just answered still have to FLUSH and RELEASE: keep
            # serving until the kernel drops the connection (the last file was
            # closed), but not forever (e.g. a module holding a file open).
            self.serve(wake_r, stop_after=2, deadline=time.monotonic() + LINGER_S)
        finally:
            self.close()
        return 0

    def unmount(self) -> None:
        if self.mounted:
            self.mounted = False
            err = self.libc.umount_detach(self.mountpoint)
            self.log(f"umount2(MNT_DETACH): {os.strerror(err) if err else 'ok'}")

    def close(self) -> None:
        """Close the device; the kernel aborts whatever is left (-ENOTCONN for readers)."""
        self.unmount()  # not done yet if the loop died of an exception
        self.queued.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(self.pidfile)


def parse_size(text: str) -> int:
    value = int(text, 0)
    if value < 0 or value % BLOCK:
        raise argparse.ArgumentTypeError(f"size must be a non-negative multiple of {BLOCK}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint")
    parser.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, help="bytes of image")
    parser.add_argument("--pidfile", help="write our pid here (removed on clean exit)")
    parser.add_argument("--verbose", action="store_true", help="one stderr line per request")
    args = parser.parse_args(argv)
    server = FuseServer(args.mountpoint, args.size, args.verbose, args.pidfile)
    try:
        return server.run()
    except OSError as exc:
        print(f"fusefs: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
