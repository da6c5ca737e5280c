"""The shape of a command-table row and of the context a handler receives.

Modelled on scsi_debug's opcode table: the generic dispatcher reads the row
(CDB length, flags, where the allocation length lives) and does every check
common to all commands, so handlers only contain command-specific logic.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from vhba_responder.cdb import Cdb

if TYPE_CHECKING:
    from vhba_responder.device import Device
    from vhba_responder.media import BeforeBlock, Medium


class Direction(enum.Enum):
    """Data direction as the kernel would see it (for documentation and tests)."""

    NONE = "none"
    IN = "in"
    OUT = "out"


class Flag(enum.Flag):
    """Per-command properties the dispatcher acts on."""

    NONE = 0
    NEEDS_MEDIUM = enum.auto()  # NOT READY 3A/xx when the drive has no accessible disc
    ALLOW_UA = enum.auto()  # runs with a unit attention pending and leaves it pending
    UNLOCKED = enum.auto()  # handler runs without the device lock (long image reads)


@dataclass(frozen=True)
class Field:
    """A big-endian integer field in the CDB: byte offset and size."""

    offset: int
    size: int

    def get(self, cdb: Cdb) -> int:
        return cdb.uint(self.offset, self.size)


@dataclass(frozen=True)
class BlockRange:
    """Where a command keeps its starting LBA and block count (for fault matching)."""

    lba: Field
    count: Field | None  # None: one block (SEEK)

    def of(self, cdb: Cdb) -> tuple[int, int]:
        start = self.lba.get(cdb)
        n = self.count.get(cdb) if self.count else 1
        return start, start + n


@dataclass
class Context:
    """Everything a handler may look at.  ``medium`` is the disc snapshot taken
    by the dispatcher under the device lock (None when no disc is accessible)."""

    device: Device
    cdb: Cdb
    data_out: bytes
    medium: Medium | None
    spec: CommandSpec
    before_block: BeforeBlock = None  # see vhba_responder.media.BeforeBlock


Handler = Callable[[Context], bytes]


@dataclass(frozen=True)
class CommandSpec:
    """One row of the dispatch table."""

    opcode: int
    name: str
    cdb_len: int
    direction: Direction
    handler: Handler
    flags: Flag = Flag.NONE
    alloc: Field | None = None  # allocation length (data-in truncation)
    blocks: BlockRange | None = None
