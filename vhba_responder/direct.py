"""Direct reads: the vhba module serving READ(10)/READ(12) from the image itself.

Why: a READ that travels kernel -> this process -> kernel costs two context
switches and a few hundred microseconds of Python under TCG, more than the
read.  Our module (not upstream vhba, and not asked for by cdemu-daemon)
accepts an ioctl naming the image file; from then on it reads plain data
blocks straight from that file and hands everything else to us as before.

The rule that keeps this correct: the module may serve reads only while we
would have answered them with exactly the image bytes, i.e. a disc is
accessible, no unit attention is pending and no fault is injected.  The
:class:`~vhba_responder.device.Device` turns direct reads off before any of
that changes (the ioctl returns only once reads in flight are done) and on
again, lazily, once it holds.  A module without the ioctl (upstream vhba)
answers with an error once; the drive then simply keeps serving every
command itself.
"""

from __future__ import annotations

import fcntl
import logging
import struct
from dataclasses import dataclass

from vhba_responder.media import BLOCK_SIZE

log = logging.getLogger(__name__)

# struct vhba_direct_read { s32 fd; u32 block_size; u64 offset; u64 blocks; }
DIRECT_READ = struct.Struct("=iIQQ")
_IOC_WRITE = 1
# _IOW(0xBE, 0xD1, struct vhba_direct_read)
IOCTL_SET_DIRECT_READ = (_IOC_WRITE << 30) | (DIRECT_READ.size << 16) | (0xBE << 8) | 0xD1


@dataclass(frozen=True)
class Mapping:
    """Blocks ``0 .. blocks-1`` of the disc are ``block_size`` bytes each from ``offset`` in ``fd``.

    ``image`` takes part in ``==`` by identity (image classes define no
    equality), so a new image that got an old image's fd number is a change.
    """

    image: object
    fd: int
    blocks: int
    block_size: int = BLOCK_SIZE
    offset: int = 0

    def pack(self) -> bytes:
        return DIRECT_READ.pack(self.fd, self.block_size, self.offset, self.blocks)


OFF = DIRECT_READ.pack(-1, 0, 0, 0)


class DirectReads:
    """What one control fd's module was last told.  Callers serialise (the device lock)."""

    def __init__(self, ctl_fd: int) -> None:
        self.ctl_fd = ctl_fd
        self.current: Mapping | None = None
        self.supported = True

    @property
    def state(self) -> str:
        """``on``, ``off`` or ``unsupported`` (shown by ``ctl status``)."""
        if not self.supported:
            return "unsupported"
        return "on" if self.current is not None else "off"

    def set(self, mapping: Mapping | None) -> None:
        """Make the module serve ``mapping`` (None: nothing); returns once in effect."""
        if not self.supported:
            return
        if mapping == self.current:
            return
        try:
            self._apply(OFF if mapping is None else mapping.pack())
        except OSError as exc:
            if mapping is None:
                # Cannot happen with a module that accepted the mapping; if it does,
                # stop trusting it rather than keep answering from a stale image.
                log.error("direct reads: turning off failed: %s", exc)
            else:
                log.info("direct reads unavailable (%s): every command comes to us", exc.strerror)
            self.supported = False
            return
        self.current = mapping

    def _apply(self, arg: bytes) -> None:
        fcntl.ioctl(self.ctl_fd, IOCTL_SET_DIRECT_READ, arg)
