"""MMC commands: TOC, disc/track information, configuration, events, mechanism.

The emulated disc is always a finished single-session disc with one Mode 1
data track starting at LBA 0, so every structure below is derived from one
number: the medium's block count.  DVD media get the fabricated TOC MMC
prescribes for DVD-ROM (same layout as a one-track CD).
"""

from __future__ import annotations

from vhba_responder.cdb import address_field, be16, be32, lba_to_msf
from vhba_responder.commands.base import CommandSpec, Context, Direction, Field, Flag
from vhba_responder.commands.features import FEATURES
from vhba_responder.media import MediaKind, Medium
from vhba_responder.sense import Ascs, SenseError, SenseKey, illegal_field

ADR_CTRL_DATA = 0x14  # ADR 1 (Q position), CONTROL 4 (data track, copy prohibited)
LEAD_OUT = 0xAA
FIRST_TRACK = LAST_TRACK = 1
MEDIA_CLASS = 4
MEDIA_CLASS_BIT = 1 << MEDIA_CLASS
DVD_DATA_START_PSN = 0x030000


def _medium(ctx: Context) -> Medium:
    assert ctx.medium is not None  # guaranteed by Flag.NEEDS_MEDIUM
    return ctx.medium


# -------------------------------------------------------------------- READ TOC
def _toc_entry(track: int, lba: int, msf: bool) -> bytes:
    return bytes((0, ADR_CTRL_DATA, track, 0)) + address_field(lba, msf)


def _toc_format0(ctx: Context, msf: bool) -> bytes:
    medium = _medium(ctx)
    start = ctx.cdb.u8(6) or FIRST_TRACK
    if start != LEAD_OUT and start > LAST_TRACK:
        raise illegal_field(6)
    entries = b""
    if start <= LAST_TRACK:
        entries += _toc_entry(1, 0, msf)
    entries += _toc_entry(LEAD_OUT, medium.blocks, msf)
    return be16(2 + len(entries)) + bytes((FIRST_TRACK, LAST_TRACK)) + entries


def _toc_format1(ctx: Context, msf: bool) -> bytes:
    # Session info: first track of the last session and where it starts.
    entry = _toc_entry(FIRST_TRACK, 0, msf)
    return be16(2 + len(entry)) + bytes((1, 1)) + entry


def _toc_format2(ctx: Context, msf: bool) -> bytes:
    """Full TOC (raw Q points A0/A1/A2 and track 1), CD only, always MSF."""
    medium = _medium(ctx)
    if medium.kind is not MediaKind.CD_ROM:
        raise illegal_field(2, 3)

    def point(p: int, pmsf: tuple[int, int, int]) -> bytes:
        return bytes((1, ADR_CTRL_DATA, 0, p, 0, 0, 0, 0, *pmsf))

    body = (
        point(0xA0, (FIRST_TRACK, 0x00, 0))  # first track, disc type CD-DA/CD-ROM
        + point(0xA1, (LAST_TRACK, 0, 0))
        + point(0xA2, lba_to_msf(medium.blocks))
        + point(1, lba_to_msf(0))
    )
    return be16(2 + len(body)) + bytes((1, 1)) + body


_TOC_FORMATS = {0: _toc_format0, 1: _toc_format1, 2: _toc_format2}


def read_toc(ctx: Context) -> bytes:
    c = ctx.cdb
    msf = c.bit(1, 1)
    fmt = c.u8(2) & 0x0F
    if fmt == 0 and c.u8(9) >> 6:
        fmt = c.u8(9) >> 6  # pre-MMC initiators (Linux sr_cd_check) put it in CONTROL
    builder = _TOC_FORMATS.get(fmt)
    if builder is None:
        raise illegal_field(2, 3)
    return builder(ctx, msf)


# ------------------------------------------------- disc and track information
def read_disc_information(ctx: Context) -> bytes:
    if ctx.cdb.u8(1) & 0x07:
        raise illegal_field(1, 2)  # only "standard disc information"
    out = bytearray(34)
    out[0:2] = be16(len(out) - 2)
    out[2] = (3 << 2) | 2  # last session complete, disc complete, not erasable
    out[3] = FIRST_TRACK
    out[4] = 1  # number of sessions (LSB)
    out[5] = FIRST_TRACK  # first track in last session (LSB)
    out[6] = LAST_TRACK  # last track in last session (LSB)
    out[7] = 0x00  # no disc ID / bar code / application code
    out[8] = 0x00  # disc type: CD-DA or CD-ROM (also used for DVD-ROM)
    out[16:20] = b"\xff" * 4  # no next session lead-in (disc complete)
    out[20:24] = b"\xff" * 4  # no last possible lead-out
    return bytes(out)


def read_track_information(ctx: Context) -> bytes:
    c = ctx.cdb
    medium = _medium(ctx)
    addr_type = c.u8(1) & 0x03
    value = c.u32(2)
    if addr_type == 0:  # the track containing this LBA
        ok = value < medium.blocks
    elif addr_type == 1:  # track number
        ok = value == FIRST_TRACK
    elif addr_type == 2:  # first track of this session
        ok = value == 1
    else:
        raise illegal_field(1, 1)
    if not ok:
        raise illegal_field(2)
    out = bytearray(36)
    out[0:2] = be16(len(out) - 2)
    out[2] = FIRST_TRACK  # track number (LSB)
    out[3] = 1  # session number (LSB)
    out[5] = 0x04  # track mode: data, recorded uninterrupted
    out[6] = 0x01  # data mode 1; not blank, not packet, not reserved
    out[7] = 0x00  # no next-writable / last-recorded address
    out[8:12] = be32(0)  # track start
    out[24:28] = be32(medium.blocks)  # track size
    return bytes(out)


# ------------------------------------------------------------ GET CONFIGURATION
def get_configuration(ctx: Context) -> bytes:
    c = ctx.cdb
    rt = c.u8(1) & 0x03
    start = c.u16(2)
    dev = ctx.device
    if rt == 0:
        chosen = [f for f in FEATURES if f.code >= start]
    elif rt == 1:
        chosen = [f for f in FEATURES if f.code >= start and f.current(dev)]
    elif rt == 2:
        chosen = [f for f in FEATURES if f.code == start]
    else:
        raise illegal_field(1, 1)
    body = b"".join(f.descriptor(dev) for f in chosen)
    return be32(4 + len(body)) + bytes(2) + be16(dev.current_profile) + body


# ------------------------------------------------------------------------ GESN
def get_event_status_notification(ctx: Context) -> bytes:
    c = ctx.cdb
    if not c.bit(1, 0):
        raise illegal_field(1, 0)  # asynchronous notification is not supported
    if not c.u8(4) & MEDIA_CLASS_BIT:
        return be16(2) + bytes((0x80, MEDIA_CLASS_BIT))  # NEA: no requested class supported
    dev = ctx.device
    # Consume the event only when the caller can actually see it.
    event = dev.take_media_event() if c.u16(7) >= 8 else dev.state.media_event
    status = (0x02 if dev.accessible_medium else 0) | (0x01 if dev.state.tray_open else 0)
    return be16(6) + bytes((MEDIA_CLASS, MEDIA_CLASS_BIT, event, status, 0, 0))


# ------------------------------------------------------ mechanism and speed
def mechanism_status(ctx: Context) -> bytes:
    door = 0x10 if ctx.device.state.tray_open else 0
    return bytes((0, door, 0, 0, 0, 0)) + be16(0)  # no changer: zero slots


def set_cd_speed(ctx: Context) -> bytes:
    read_speed = ctx.cdb.u16(2)
    ctx.device.state.speed_kbps = 0 if read_speed == 0xFFFF else read_speed
    return b""


def get_performance(ctx: Context) -> bytes:
    c = ctx.cdb
    kind = c.u8(10)
    max_desc = c.u16(8)
    write = c.bit(1, 2)
    if kind == 0x00:
        descs = []
        medium = ctx.medium
        if medium is not None and not write and c.u8(1) & 0x03 == 0:
            speed = ctx.device.state.speed_kbps or 8467
            descs.append(be32(0) + be32(speed) + be32(medium.last_lba) + be32(speed))
        descs = descs[:max_desc]
        body = b"".join(descs)
        return be32(4 + len(body)) + bytes(((0x02 if write else 0), 0, 0, 0)) + body
    if kind == 0x03:  # write speed descriptors: a read-only drive has none
        return be32(4) + bytes(4)
    raise illegal_field(10)


# ----------------------------------------------------------- READ SUBCHANNEL
def read_subchannel(ctx: Context) -> bytes:
    c = ctx.cdb
    if not c.bit(2, 6):  # SubQ=0: header only
        return bytes((0, 0x15)) + be16(0)
    fmt = c.u8(3)
    if fmt == 0x01:
        body = bytes((0x01, ADR_CTRL_DATA, 1, 1)) + address_field(0, c.bit(1, 1)) * 2
    elif fmt == 0x02:
        body = bytes((0x02, 0, 0, 0, 0x00)) + bytes(13) + bytes(2)  # MCVal=0
    elif fmt == 0x03:
        if c.u8(6) != FIRST_TRACK:
            raise illegal_field(6)
        body = bytes((0x03, ADR_CTRL_DATA, FIRST_TRACK, 0, 0x00)) + bytes(12) + bytes(3)
    else:
        raise illegal_field(3)
    return bytes((0, 0x15)) + be16(len(body)) + body  # 0x15: no current audio status


# -------------------------------------------------------- READ DISC STRUCTURE
def _dvd_physical(medium: Medium) -> bytes:
    info = bytearray(2048)
    info[0] = 0x01  # book type DVD-ROM, part version 1
    info[1] = 0x02  # 120 mm, maximum rate 10.08 Mbit/s
    info[2] = 0x01  # one layer, parallel track path, embossed (read-only) layer
    info[3] = 0x00  # densities: 0.267 um/bit, 0.74 um/track
    info[4:8] = be32(DVD_DATA_START_PSN)
    info[8:12] = be32(DVD_DATA_START_PSN + medium.blocks - 1)
    info[12:16] = be32(0)
    return bytes(info)


def read_disc_structure(ctx: Context) -> bytes:
    c = ctx.cdb
    if c.u8(1) & 0x0F:
        raise illegal_field(1, 3)  # only DVD structures (media type 0)
    fmt = c.u8(7)
    if fmt == 0xFF:
        entries = b"".join(bytes((f, 0x40)) + be16(n) for f, n in ((0x00, 2052), (0x01, 8)))
        entries += bytes((0xFF, 0x40)) + be16(4 + len(entries) + 4)
        return be16(2 + len(entries)) + bytes(2) + entries
    if fmt not in (0x00, 0x01):
        raise illegal_field(7)
    medium = ctx.medium
    if medium is None:
        raise ctx.device.not_ready_error()
    if medium.kind is not MediaKind.DVD_ROM:
        raise SenseError(SenseKey.ILLEGAL_REQUEST, Ascs.INCOMPATIBLE_FORMAT)
    if c.u8(6) != 0:
        raise illegal_field(6)  # single-layer disc
    body = _dvd_physical(medium) if fmt == 0x00 else bytes(4)  # no CSS, all regions
    return be16(2 + len(body)) + bytes(2) + body


_NM = Flag.NEEDS_MEDIUM

COMMANDS = (
    CommandSpec(
        0x42, "READ SUB-CHANNEL", 10, Direction.IN, read_subchannel, _NM, alloc=Field(7, 2)
    ),
    CommandSpec(0x43, "READ TOC/PMA/ATIP", 10, Direction.IN, read_toc, _NM, alloc=Field(7, 2)),
    CommandSpec(
        0x46,
        "GET CONFIGURATION",
        10,
        Direction.IN,
        get_configuration,
        Flag.ALLOW_UA,
        alloc=Field(7, 2),
    ),
    CommandSpec(
        0x4A,
        "GET EVENT STATUS NOTIFICATION",
        10,
        Direction.IN,
        get_event_status_notification,
        Flag.ALLOW_UA,
        alloc=Field(7, 2),
    ),
    CommandSpec(
        0x51,
        "READ DISC INFORMATION",
        10,
        Direction.IN,
        read_disc_information,
        _NM,
        alloc=Field(7, 2),
    ),
    CommandSpec(
        0x52,
        "READ TRACK INFORMATION",
        10,
        Direction.IN,
        read_track_information,
        _NM,
        alloc=Field(7, 2),
    ),
    CommandSpec(0xAC, "GET PERFORMANCE", 12, Direction.IN, get_performance),
    CommandSpec(
        0xAD, "READ DISC STRUCTURE", 12, Direction.IN, read_disc_structure, alloc=Field(8, 2)
    ),
    CommandSpec(0xBB, "SET CD SPEED", 12, Direction.NONE, set_cd_speed),
    CommandSpec(0xBD, "MECHANISM STATUS", 12, Direction.IN, mechanism_status, alloc=Field(8, 2)),
)
