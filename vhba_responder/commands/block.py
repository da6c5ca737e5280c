"""Block access: READ CAPACITY, READ(10)/(12), READ CD and SEEK.

Reads run without the device lock (``Flag.UNLOCKED``) on the disc snapshot
the dispatcher took, so one slow image read never stalls TEST UNIT READY or
GESN polling on the same drive.
"""

from __future__ import annotations

from vhba_responder.cdb import be32
from vhba_responder.commands.base import (
    BlockRange,
    CommandSpec,
    Context,
    Direction,
    Field,
    Flag,
)
from vhba_responder.media import BLOCK_SIZE, MediaKind, Medium
from vhba_responder.sense import Ascs, FieldPointer, SenseError, SenseKey, illegal_field

# READ CD "expected sector type" values (CDB byte 1 bits 4-2).
SECTOR_ANY = 0
SECTOR_CDDA = 1
SECTOR_MODE1 = 2
SECTOR_MODE2_FORMLESS = 3
SECTOR_MODE2_FORM1 = 4
SECTOR_MODE2_FORM2 = 5
READ_CD_USER_DATA = 0x10  # byte 9: user data only


def _medium(ctx: Context) -> Medium:
    assert ctx.medium is not None  # guaranteed by Flag.NEEDS_MEDIUM
    return ctx.medium


def check_range(medium: Medium, lba: int, count: int, lba_byte: int = 2) -> None:
    """LOGICAL BLOCK ADDRESS OUT OF RANGE with INFORMATION = the starting LBA.

    The starting LBA (not the first LBA past the end) is reported on purpose:
    Linux sr turns INFORMATION into a count of good bytes, and vhba transfers
    no data with a CHECK CONDITION, so pointing past the start would make sr
    trust bytes that never arrived.
    """
    if lba + count > medium.blocks or lba >= 0x1_0000_0000:
        raise SenseError(
            SenseKey.ILLEGAL_REQUEST,
            Ascs.LBA_OUT_OF_RANGE,
            information=lba,
            field=FieldPointer(lba_byte),
        )


def read_capacity10(ctx: Context) -> bytes:
    c = ctx.cdb
    if not c.bit(8, 0) and c.u32(2) != 0:  # an LBA without PMI is invalid
        raise illegal_field(2)
    blocks = ctx.device.faults.capacity_blocks(c.opcode)
    if blocks is None:
        blocks = _medium(ctx).blocks
    return be32(blocks - 1) + be32(BLOCK_SIZE)


def _read(ctx: Context, lba: int, count: int) -> bytes:
    medium = _medium(ctx)
    check_range(medium, lba, count)
    return medium.read_blocks(lba, count, ctx.before_block) if count else b""


def read10(ctx: Context) -> bytes:
    return _read(ctx, ctx.cdb.u32(2), ctx.cdb.u16(7))


def read12(ctx: Context) -> bytes:
    return _read(ctx, ctx.cdb.u32(2), ctx.cdb.u32(6))


def read_cd(ctx: Context) -> bytes:
    c = ctx.cdb
    medium = _medium(ctx)
    sector_type = (c.u8(1) >> 2) & 0x07
    if sector_type > SECTOR_MODE2_FORM2:
        raise illegal_field(1, 4)
    illegal_mode = SenseError(
        SenseKey.ILLEGAL_REQUEST, Ascs.ILLEGAL_MODE_FOR_TRACK, field=FieldPointer(1, 4)
    )
    if medium.kind is not MediaKind.CD_ROM:
        raise illegal_mode  # READ CD addresses CD sectors only
    if sector_type not in (SECTOR_ANY, SECTOR_MODE1):
        raise illegal_mode  # the single track is Mode 1 data
    if c.u8(10) & 0x07:
        raise illegal_field(10, 2)  # no sub-channel data
    fields = c.u8(9)
    if fields not in (0x00, READ_CD_USER_DATA):
        raise illegal_field(9, 7)  # sync/header/EDC/C2 are not synthesised
    lba, count = c.u32(2), c.u24(6)
    check_range(medium, lba, count)
    if fields == 0 or count == 0:
        return b""
    return medium.read_blocks(lba, count, ctx.before_block)


def seek10(ctx: Context) -> bytes:
    check_range(_medium(ctx), ctx.cdb.u32(2), 1)
    return b""


_LBA = Field(2, 4)
_READ_FLAGS = Flag.NEEDS_MEDIUM | Flag.UNLOCKED

COMMANDS = (
    CommandSpec(0x25, "READ CAPACITY(10)", 10, Direction.IN, read_capacity10, Flag.NEEDS_MEDIUM),
    CommandSpec(
        0x28,
        "READ(10)",
        10,
        Direction.IN,
        read10,
        _READ_FLAGS,
        blocks=BlockRange(_LBA, Field(7, 2)),
    ),
    CommandSpec(
        0x2B,
        "SEEK(10)",
        10,
        Direction.NONE,
        seek10,
        Flag.NEEDS_MEDIUM,
        blocks=BlockRange(_LBA, None),
    ),
    CommandSpec(
        0xA8,
        "READ(12)",
        12,
        Direction.IN,
        read12,
        _READ_FLAGS,
        blocks=BlockRange(_LBA, Field(6, 4)),
    ),
    CommandSpec(
        0xBE,
        "READ CD",
        12,
        Direction.IN,
        read_cd,
        _READ_FLAGS,
        blocks=BlockRange(_LBA, Field(6, 3)),
    ),
)
