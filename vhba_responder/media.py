"""Disc images and what kind of disc they pretend to be.

Images are read with ``os.pread`` on a private descriptor: there is no shared
file position, so several worker threads can read the same image at once.
The descriptor is closed only when the last reference goes away (an eject
does not pull the file out from under a read that is still in flight).
"""

from __future__ import annotations

import enum
import errno
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

from vhba_responder.cdsector import mode1_sector
from vhba_responder.cue import DiscLayout

# Called (at most once) by a read that is about to block on storage, so the
# server can let another thread take over the drive meanwhile.
BeforeBlock = Optional[Callable[[], None]]

BLOCK_SIZE = 2048
# An 80-minute CD holds 360,000 sectors of 2048 bytes; anything bigger can
# only be a DVD.  Images up to and including this size are presented as CD-ROM.
CD_MAX_BYTES = 360_000 * BLOCK_SIZE  # 737,280,000
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", None)  # Linux >= 4.14, Python >= 3.7
READ_CHUNK = 1 << 20  # one pread per MiB: big enough to be cheap, small enough to bound memory


class MediaKind(enum.Enum):
    """The physical disc type, which decides the MMC profile and features."""

    CD_ROM = "cd-rom"
    DVD_ROM = "dvd-rom"

    @property
    def profile(self) -> int:
        return PROFILE_CD_ROM if self is MediaKind.CD_ROM else PROFILE_DVD_ROM


PROFILE_NONE = 0x0000
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010


def kind_for_size(size: int) -> MediaKind:
    """CD-ROM up to :data:`CD_MAX_BYTES`, DVD-ROM above."""
    return MediaKind.CD_ROM if size <= CD_MAX_BYTES else MediaKind.DVD_ROM


class ImageSource(Protocol):
    """Random-access bytes behind a medium."""

    size: int

    def pread(self, length: int, offset: int, before_block: BeforeBlock = None) -> bytes: ...


class FileImage:
    """An image file on disk, read with ``os.pread``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size = os.fstat(self._fd).st_size
        self._nowait = _RWF_NOWAIT is not None  # cleared when the file system says no
        weakref.finalize(self, os.close, self._fd)

    def fileno(self) -> int:
        """The image's descriptor (handed to the module for direct reads)."""
        return self._fd

    def pread(self, length: int, offset: int, before_block: BeforeBlock = None) -> bytes:
        if before_block is not None:
            cached = self._cached(length, offset)
            if cached is not None:
                return cached
            before_block()
        parts: list[bytes] = []
        done = 0
        while done < length:
            want = min(READ_CHUNK, length - done)
            chunk = os.pread(self._fd, want, offset + done)
            if not chunk:
                break
            parts.append(chunk)
            done += len(chunk)
        data = b"".join(parts)
        # A file shorter than its last whole block (cannot happen for blocks we
        # advertise, but an image may shrink under us): pad with zeros.
        return data.ljust(length, b"\0")

    def _cached(self, length: int, offset: int) -> bytes | None:
        """The whole range if the page cache holds it (a read that cannot block), else None.

        RWF_NOWAIT makes the kernel answer EAGAIN instead of going to storage;
        a file system that cannot tell answers EOPNOTSUPP, treated as "may block".
        """
        if not self._nowait or length > READ_CHUNK:
            return None
        buf = bytearray(length)
        try:
            n = os.preadv(self._fd, [buf], offset, _RWF_NOWAIT)
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:  # for good: don't ask again on every read
                self._nowait = False
            return None
        return bytes(buf) if n == length else None


class BytesImage:
    """An in-memory image (tests, and the smallest possible demo medium)."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self.size = len(self._data)

    def pread(self, length: int, offset: int, before_block: BeforeBlock = None) -> bytes:
        return self._data[offset : offset + length].ljust(length, b"\0")


@dataclass
class Medium:
    """A loaded disc: its image, kind and size in 2048-byte blocks."""

    source: ImageSource
    kind: MediaKind
    label: str = ""
    blocks: int = field(init=False)

    def __post_init__(self) -> None:
        self.blocks = self.source.size // BLOCK_SIZE

    @classmethod
    def open(cls, path: Path, kind: MediaKind | None = None) -> Medium:
        """Open an image file; the kind follows the size unless forced.

        A ``.cue`` sheet is a multi-track CD (:class:`~vhba_responder.cuedisc.CueDisc`)
        whatever its size; anything else is a plain image of 2048-byte sectors.
        """
        path = Path(path)
        if path.suffix.lower() == ".cue":
            # Imported here: cuedisc reads its BIN files through FileImage above.
            from vhba_responder.cuedisc import CueDisc

            return cls(CueDisc(path), MediaKind.CD_ROM, label=str(path))
        src = FileImage(path)
        return cls(src, kind or kind_for_size(src.size), label=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, kind: MediaKind | None = None, label: str = "") -> Medium:
        src = BytesImage(data)
        return cls(src, kind or kind_for_size(src.size), label=label or "<memory>")

    @property
    def last_lba(self) -> int:
        return self.blocks - 1

    def read_blocks(self, lba: int, count: int, before_block: BeforeBlock = None) -> bytes:
        """User data of ``count`` blocks from ``lba`` (the caller checked the range)."""
        return self.source.pread(count * BLOCK_SIZE, lba * BLOCK_SIZE, before_block)

    @property
    def layout(self) -> DiscLayout:
        """The tracks: a CUE sheet's, else one Mode 1 data track over the whole image."""
        own = getattr(self.source, "layout", None)
        return own if own is not None else DiscLayout.plain(self.blocks)

    def raw_sector(self, lba: int) -> bytes:
        """The full 2352-byte sector at ``lba`` (READ CD with sync, headers, EDC/ECC)."""
        own = getattr(self.source, "raw_sector", None)
        return own(lba) if own is not None else mode1_sector(lba, self.read_blocks(lba, 1))
