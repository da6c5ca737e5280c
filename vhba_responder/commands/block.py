"""Block access: READ CAPACITY, READ(10)/(12), READ CD and SEEK.

Reads run without the device lock (``Flag.UNLOCKED``) on the disc snapshot
the dispatcher took, so one slow image read never stalls TEST UNIT READY or
GESN polling on the same drive.
"""

from __future__ import annotations

from vhba_responder import readcd, subchannel
from vhba_responder.cdb import be32
from vhba_responder.commands.base import (
    BlockRange,
    CommandSpec,
    Context,
    Direction,
    Field,
    Flag,
)
from vhba_responder.cue import DiscLayout
from vhba_responder.cuedisc import AudioSectorError
from vhba_responder.media import BLOCK_SIZE, MediaKind, Medium
from vhba_responder.readcd import BadSelection, SectorTypeMismatch, Selection
from vhba_responder.sense import Ascs, FieldPointer, SenseError, SenseKey, illegal_field


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


def _illegal_mode(byte: int = 2) -> SenseError:
    return SenseError(
        SenseKey.ILLEGAL_REQUEST, Ascs.ILLEGAL_MODE_FOR_TRACK, field=FieldPointer(byte)
    )


def _read(ctx: Context, lba: int, count: int) -> bytes:
    medium = _medium(ctx)
    check_range(medium, lba, count)
    if not count:
        return b""
    try:
        return medium.read_blocks(lba, count, ctx.before_block)
    except AudioSectorError:
        raise _illegal_mode() from None  # 2048-byte blocks of a CD-DA track do not exist


def read10(ctx: Context) -> bytes:
    return _read(ctx, ctx.cdb.u32(2), ctx.cdb.u16(7))


def read12(ctx: Context) -> bytes:
    return _read(ctx, ctx.cdb.u32(2), ctx.cdb.u32(6))


def _user_data_only(sel: Selection, layout: DiscLayout) -> bool:
    """Mode 1 user data and nothing else, of a disc with only Mode 1 tracks: served
    as READ(10) is (as fast, and straight from the image)."""
    extras = sel.sync or sel.headers or sel.edc or sel.c2 or sel.subchannel
    return (
        sel.user
        and not extras
        and sel.sector_type in (readcd.ANY, readcd.MODE1)
        and all(t.mode == "MODE1/2048" for t in layout.tracks)
    )


# READ CD byte 10: which sub-channel follows each sector (none: no entry).
_SUBCHANNEL = {
    readcd.SUB_RAW: subchannel.raw_pw,
    readcd.SUB_Q: subchannel.formatted_q,
    readcd.SUB_RW: subchannel.deinterleaved_rw,
}


def read_cd(ctx: Context) -> bytes:
    c = ctx.cdb
    medium = _medium(ctx)
    try:
        sel = Selection.of(c.u8(1), c.u8(9), c.u8(10))
    except BadSelection as exc:
        raise illegal_field(exc.byte, exc.bit) from None
    if medium.kind is not MediaKind.CD_ROM:
        raise _illegal_mode(1)  # READ CD addresses CD sectors only
    lba, count = c.u32(2), c.u24(6)
    check_range(medium, lba, count)
    if count == 0:
        return b""
    layout = medium.layout
    if _user_data_only(sel, layout):
        return medium.read_blocks(lba, count, ctx.before_block)
    sub = _SUBCHANNEL.get(sel.subchannel)
    out = []
    for at in range(lba, lba + count):
        raw = medium.raw_sector(at)
        kind = readcd.sector_kind(layout.track_at(at).mode, raw)
        try:
            sel.check_type(kind)
        except SectorTypeMismatch:
            raise _illegal_mode(1) from None
        out.append(sel.select(raw, sel.effective_kind(kind)))
        if sub is not None:
            out.append(sub(layout, at))
    return b"".join(out)


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
