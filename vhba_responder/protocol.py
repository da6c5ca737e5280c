"""The /dev/vhba_ctl wire format and a thin wrapper around one control fd.

Request header (kernel -> responder), host byte order, 32 bytes:
``metatag u32, lun u32, cdb[16], cdb_len u8, 3 pad, data_len u32``, followed by
``data_len`` bytes of payload for data-out commands.
Response header (responder -> kernel), 12 bytes: ``metatag, status, data_len``
followed by ``data_len`` bytes of data-in (status 0) or sense (status != 0).

Each ``open()`` of the control node creates one SCSI device; ``read()``
returns exactly one request; ``write()`` never blocks.  The two ioctls use
raw magic numbers (not ``_IOR``-encoded).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

REQUEST = struct.Struct("=II16sB3xI")
RESPONSE = struct.Struct("=III")
assert REQUEST.size == 32 and RESPONSE.size == 12

IOCTL_GET_ADDRESS = 0x0BEEF001  # unsigned int[4]: host, channel, id, lun
IOCTL_GET_DEVNUM = 0x0BEEF002  # unsigned int: global device number

MAX_TRANSFER = 256 * 512  # vhba max_sectors: 128 KiB per command
# Room for the header and the largest data-out payload, with slack for a
# module that raises max_sectors.
READ_BUFFER = REQUEST.size + 4 * MAX_TRANSFER
SENSE_MAX = 96  # SCSI_SENSE_BUFFERSIZE: the kernel clamps sense to this


@dataclass(frozen=True)
class Request:
    """One command as read from the control fd."""

    tag: int
    lun: int
    cdb: bytes  # only the meaningful cdb_len bytes
    data_len: int
    data_out: bytes = b""

    def pack(self) -> bytes:
        """Kernel-side encoding (used by tests and by fake transports)."""
        return (
            REQUEST.pack(
                self.tag, self.lun, self.cdb.ljust(16, b"\0"), len(self.cdb), self.data_len
            )
            + self.data_out
        )


def parse_request(buf: bytes) -> Request:
    """Decode a read() result.  Anything after the 32-byte header is data-out."""
    if len(buf) < REQUEST.size:
        raise ValueError(f"short vhba request: {len(buf)} bytes")
    tag, lun, cdb16, cdb_len, data_len = REQUEST.unpack_from(buf)
    cdb_len = min(max(cdb_len, 1), 16)
    return Request(tag, lun, bytes(cdb16[:cdb_len]), data_len, bytes(buf[REQUEST.size :]))


def pack_response(tag: int, status: int, payload: bytes) -> bytes:
    """Header plus payload.  ``data_len`` equals the payload written (never padded)."""
    return RESPONSE.pack(tag, status, len(payload)) + payload


def unpack_response(buf: bytes) -> tuple[int, int, bytes]:
    tag, status, n = RESPONSE.unpack_from(buf)
    return tag, status, bytes(buf[RESPONSE.size : RESPONSE.size + n])


class ControlOpenError(OSError):
    """The control node is missing or unusable; the message says how to fix it."""


def open_control(path: Path) -> int:
    """Open the control node non-blocking (one SCSI device per call)."""
    try:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ControlOpenError(
            errno.ENOENT,
            f"{path} does not exist: load the module (modprobe vhba, or insmod vhba.ko)",
        ) from None
    except PermissionError:
        raise ControlOpenError(
            errno.EACCES,
            f"cannot open {path}: permission denied: run as root or add a udev rule "
            f'(KERNEL=="vhba_ctl", MODE="0660", GROUP="cdrom")',
        ) from None
    except OSError as exc:
        raise ControlOpenError(exc.errno, f"cannot open {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class Address:
    """The Linux SCSI address H:C:T:L of the device behind one fd."""

    host: int
    channel: int
    target: int
    lun: int

    def __str__(self) -> str:
        return f"{self.host}:{self.channel}:{self.target}:{self.lun}"


def get_address(fd: int) -> Address:
    buf = array.array("I", [0, 0, 0, 0])
    fcntl.ioctl(fd, IOCTL_GET_ADDRESS, buf, True)
    return Address(*buf)


def get_devnum(fd: int) -> int:
    buf = array.array("I", [0])
    fcntl.ioctl(fd, IOCTL_GET_DEVNUM, buf, True)
    return buf[0]


def read_request(fd: int, buf: bytearray) -> Request | None:
    """One non-blocking read into the caller's reusable buffer; None when nothing
    is pending (EAGAIN after a spurious POLLIN is harmless for this responder)."""
    try:
        n = os.readv(fd, [buf])
    except (BlockingIOError, InterruptedError):
        return None
    return parse_request(bytes(memoryview(buf)[:n]))


def write_response(fd: int, tag: int, status: int, payload: bytes) -> int:
    """Header and payload in ONE contiguous write: vhba's write handler reads the
    payload from right after the header in the same user buffer, so writev()
    (which a plain ->write device sees as separate calls) must not be used."""
    if status != 0:
        payload = payload[:SENSE_MAX]
    return os.write(fd, pack_response(tag, status, payload))
