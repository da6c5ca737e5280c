"""SPC (primary) commands: identification, readiness, sense, mode pages, locking.

INQUIRY VERSION is 5 (SPC-3).  Linux turns it into scsi_level 6, which is
>= SCSI_SPC_2, so the midlayer fetches VPD pages 0x00/0x80/0x83 (giving the
device a stable serial and identifier in sysfs and udev); with VERSION 0
("ANSI: 0", CDEmu's choice) the kernel skips VPD entirely.  scsi_add_device
scans a single LUN, so REPORT LUNS is not sent either way; it is implemented
for tools such as sg_luns.  Levels >= SPC-5 would additionally trigger the
command-duration-limit probe (REPORT SUPPORTED OPCODES), which is avoided.
"""

from __future__ import annotations

from vhba_responder.cdb import be16, be32
from vhba_responder.commands.base import CommandSpec, Context, Direction, Field, Flag
from vhba_responder.commands.modepages import ALL_PAGES, PAGES, page_bytes
from vhba_responder.sense import (
    Ascs,
    FieldPointer,
    SenseError,
    SenseKey,
    encode_fixed,
    illegal_field,
    illegal_param,
)

INQUIRY_STANDARD_LEN = 96
INQUIRY_VERSION_SPC3 = 0x05
VERSION_DESCRIPTORS = (0x0300, 0x02A0)  # SPC-3, MMC-3
BLOCK_SIZE = 2048


def _ascii(text: str, width: int) -> bytes:
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


# ----------------------------------------------------------------- INQUIRY
def standard_inquiry(ctx: Context) -> bytes:
    ident = ctx.device.identity
    out = bytearray(INQUIRY_STANDARD_LEN)
    out[0] = 0x05  # qualifier 0, peripheral device type 5 (CD/DVD)
    out[1] = 0x80  # RMB: removable medium
    out[2] = INQUIRY_VERSION_SPC3
    out[3] = 0x02  # response data format 2
    out[4] = INQUIRY_STANDARD_LEN - 5  # additional length
    out[8:16] = _ascii(ident.vendor, 8)
    out[16:32] = _ascii(ident.product, 16)
    out[32:36] = _ascii(ident.revision, 4)
    out[36:56] = _ascii(ident.serial, 20)
    for i, desc in enumerate(VERSION_DESCRIPTORS):
        out[58 + 2 * i : 60 + 2 * i] = be16(desc)
    return bytes(out)


def _vpd_supported(ctx: Context) -> bytes:
    pages = bytes(sorted(VPD_PAGES))
    return bytes((0x05, 0x00, 0x00, len(pages))) + pages


def _vpd_serial(ctx: Context) -> bytes:
    serial = ctx.device.identity.serial.encode("ascii", "replace")
    return bytes((0x05, 0x80, 0x00, len(serial))) + serial


def _vpd_device_id(ctx: Context) -> bytes:
    ident = ctx.device.identity
    # One T10 vendor ID designator: vendor (8) + product + serial, all ASCII.
    ident_bytes = _ascii(ident.vendor, 8) + _ascii(ident.product, 16) + ident.serial.encode()
    desig = bytes((0x02, 0x01, 0x00, len(ident_bytes))) + ident_bytes  # ASCII, LU, type 1
    return bytes((0x05, 0x83)) + be16(len(desig)) + desig


VPD_PAGES = {0x00: _vpd_supported, 0x80: _vpd_serial, 0x83: _vpd_device_id}


def inquiry(ctx: Context) -> bytes:
    c = ctx.cdb
    if c.bit(1, 1):  # CMDDT (obsolete) is not supported
        raise illegal_field(1, 1)
    if not c.bit(1, 0):
        if c.u8(2) != 0:
            raise illegal_field(2)
        return standard_inquiry(ctx)
    page = VPD_PAGES.get(c.u8(2))
    if page is None:
        raise illegal_field(2)
    return page(ctx)


# ------------------------------------------------------- TUR / REQUEST SENSE
def test_unit_ready(ctx: Context) -> bytes:
    return b""  # the dispatcher already enforced UA and medium presence


def request_sense(ctx: Context) -> bytes:
    if ctx.cdb.bit(1, 0):
        raise illegal_field(1, 0)  # descriptor-format sense is not supported
    state = ctx.device.state
    if state.pending_ua is not None:
        ua, state.pending_ua = state.pending_ua, None
        return encode_fixed(SenseKey.UNIT_ATTENTION, ua.asc, ua.ascq)
    if state.last_sense is not None:
        sense, state.last_sense = state.last_sense, None
        return sense
    return encode_fixed(SenseKey.NO_SENSE, 0, 0)


# ----------------------------------------------------------------- MODE SENSE
def _mode_pages(ctx: Context, pc_byte: int, subpage_byte: int) -> bytes:
    c = ctx.cdb
    pc = c.u8(pc_byte) >> 6
    code = c.u8(pc_byte) & 0x3F
    subpage = c.u8(subpage_byte)
    if pc == 3:
        raise SenseError(
            SenseKey.ILLEGAL_REQUEST, Ascs.SAVING_NOT_SUPPORTED, field=FieldPointer(pc_byte, 7)
        )
    if subpage not in (0x00, 0xFF):
        raise illegal_field(subpage_byte)
    codes = sorted(PAGES) if code == ALL_PAGES else [code]
    if code != ALL_PAGES and code not in PAGES:
        raise illegal_field(pc_byte, 5)
    return b"".join(page_bytes(ctx.device, p, changeable=pc == 1) for p in codes)


def mode_sense6(ctx: Context) -> bytes:
    pages = _mode_pages(ctx, 2, 3)
    # mode data length, medium type, device-specific parameter, block descriptor length
    return bytes((3 + len(pages), 0, 0, 0)) + pages


def mode_sense10(ctx: Context) -> bytes:
    pages = _mode_pages(ctx, 2, 3)
    return be16(6 + len(pages)) + bytes((0, 0, 0, 0)) + be16(0) + pages


# ---------------------------------------------------------------- MODE SELECT
def _mode_select(ctx: Context, header_len: int, plen: int) -> bytes:
    """Validate the parameter list structure; values themselves are accepted and ignored."""
    c = ctx.cdb
    if c.bit(1, 0):
        raise illegal_field(1, 0)  # SP: no saved pages
    if plen == 0:
        return b""
    data = ctx.data_out[:plen]
    if plen < header_len or len(data) < plen:
        raise SenseError(SenseKey.ILLEGAL_REQUEST, Ascs.PARAMETER_LIST_LENGTH_ERROR)
    bd_len = data[3] if header_len == 4 else int.from_bytes(data[6:8], "big")
    pos = header_len
    if bd_len not in (0, 8) or pos + bd_len > plen:
        raise illegal_param(3 if header_len == 4 else 7)
    if bd_len == 8:
        block_len = int.from_bytes(data[pos + 5 : pos + 8], "big")
        if block_len != BLOCK_SIZE:  # only 2048-byte logical blocks are supported
            raise illegal_param(pos + 5)
        pos += 8
    while pos < plen:
        if pos + 2 > plen:
            raise SenseError(SenseKey.ILLEGAL_REQUEST, Ascs.PARAMETER_LIST_LENGTH_ERROR)
        code = data[pos] & 0x3F
        if code not in PAGES:
            raise illegal_param(pos, 5)
        length = data[pos + 1]
        if length + 2 != len(PAGES[code](ctx.device)) or pos + 2 + length > plen:
            raise illegal_param(pos + 1)
        pos += 2 + length
    return b""


def mode_select6(ctx: Context) -> bytes:
    return _mode_select(ctx, 4, ctx.cdb.u8(4))


def mode_select10(ctx: Context) -> bytes:
    return _mode_select(ctx, 8, ctx.cdb.u16(7))


# ------------------------------------------------------ locking and loading
def prevent_allow(ctx: Context) -> bytes:
    ctx.device.state.locked = ctx.cdb.bit(4, 0)
    return b""


def start_stop_unit(ctx: Context) -> bytes:
    c = ctx.cdb
    if c.u8(4) >> 4:  # a power-condition change: LoEj and Start are ignored (MMC)
        return b""
    if c.bit(4, 1):  # LoEj
        if c.bit(4, 0):
            ctx.device.close_tray()
        else:
            ctx.device.open_tray()
    return b""


def report_luns(ctx: Context) -> bytes:
    if ctx.cdb.u8(2) > 2:
        raise illegal_field(2)
    return be32(8) + bytes(4) + bytes(8)  # one LUN: 0


def synchronize_cache(ctx: Context) -> bytes:
    return b""  # nothing is ever cached for writing


COMMANDS = (
    CommandSpec(0x00, "TEST UNIT READY", 6, Direction.NONE, test_unit_ready, Flag.NEEDS_MEDIUM),
    CommandSpec(
        0x03, "REQUEST SENSE", 6, Direction.IN, request_sense, Flag.ALLOW_UA, alloc=Field(4, 1)
    ),
    CommandSpec(0x12, "INQUIRY", 6, Direction.IN, inquiry, Flag.ALLOW_UA, alloc=Field(3, 2)),
    CommandSpec(0x15, "MODE SELECT(6)", 6, Direction.OUT, mode_select6),
    CommandSpec(0x1A, "MODE SENSE(6)", 6, Direction.IN, mode_sense6, alloc=Field(4, 1)),
    CommandSpec(0x1B, "START STOP UNIT", 6, Direction.NONE, start_stop_unit),
    CommandSpec(0x1E, "PREVENT ALLOW MEDIUM REMOVAL", 6, Direction.NONE, prevent_allow),
    CommandSpec(0x35, "SYNCHRONIZE CACHE(10)", 10, Direction.NONE, synchronize_cache),
    CommandSpec(0x55, "MODE SELECT(10)", 10, Direction.OUT, mode_select10),
    CommandSpec(0x5A, "MODE SENSE(10)", 10, Direction.IN, mode_sense10, alloc=Field(7, 2)),
    CommandSpec(
        0xA0, "REPORT LUNS", 12, Direction.IN, report_luns, Flag.ALLOW_UA, alloc=Field(6, 4)
    ),
)
