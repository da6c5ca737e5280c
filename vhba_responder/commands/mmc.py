"""MMC commands: TOC, disc/track information, configuration, events, mechanism.

The emulated disc is always a finished single-session disc; its tracks come
from the medium's layout (:attr:`Medium.layout`): one Mode 1 data track at
LBA 0 for a plain image, a CUE sheet's data and audio tracks otherwise.
DVD media get the fabricated TOC MMC prescribes for DVD-ROM (same layout as
a one-track CD).
"""

from __future__ import annotations

from vhba_responder.audioplay import NotPlaying
from vhba_responder.cdb import address_field, be16, be32, lba_to_msf
from vhba_responder.commands.base import CommandSpec, Context, Direction, Field, Flag
from vhba_responder.commands.features import FEATURES
from vhba_responder.cue import PlacedTrack
from vhba_responder.media import MediaKind, Medium
from vhba_responder.sense import Ascs, SenseError, SenseKey, illegal_field

LEAD_OUT = 0xAA
MEDIA_CLASS = 4
MEDIA_CLASS_BIT = 1 << MEDIA_CLASS
DVD_DATA_START_PSN = 0x030000
DISC_TYPE_CD_ROM, DISC_TYPE_CD_XA = 0x00, 0x20  # full TOC point A0, PSEC


def _medium(ctx: Context) -> Medium:
    assert ctx.medium is not None  # guaranteed by Flag.NEEDS_MEDIUM
    return ctx.medium


def _adr_ctrl(track: PlacedTrack) -> int:
    return 0x10 | track.control  # ADR 1: Q encodes the position


# -------------------------------------------------------------------- READ TOC
def _toc_entry(adr_ctrl: int, number: int, lba: int, msf: bool) -> bytes:
    return bytes((0, adr_ctrl, number, 0)) + address_field(lba, msf)


def _toc_format0(ctx: Context, msf: bool) -> bytes:
    tracks = _medium(ctx).layout.tracks
    first, last = tracks[0].number, tracks[-1].number
    start = ctx.cdb.u8(6) or first
    if start != LEAD_OUT and start > last:
        raise illegal_field(6)
    entries = b"".join(
        _toc_entry(_adr_ctrl(t), t.number, t.start, msf) for t in tracks if t.number >= start
    )
    entries += _toc_entry(_adr_ctrl(tracks[-1]), LEAD_OUT, tracks[-1].end, msf)
    return be16(2 + len(entries)) + bytes((first, last)) + entries


def _toc_format1(ctx: Context, msf: bool) -> bytes:
    # Session info: first track of the last (only) session and where it starts.
    first = _medium(ctx).layout.tracks[0]
    entry = _toc_entry(_adr_ctrl(first), first.number, first.start, msf)
    return be16(2 + len(entry)) + bytes((1, 1)) + entry


def _toc_format2(ctx: Context, msf: bool) -> bytes:
    """Full TOC (raw Q points A0/A1/A2 and one per track), CD only, always MSF."""
    medium = _medium(ctx)
    if medium.kind is not MediaKind.CD_ROM:
        raise illegal_field(2, 3)
    layout = medium.layout
    first, last = layout.tracks[0], layout.tracks[-1]

    def point(adr_ctrl: int, p: int, pmsf: tuple[int, int, int]) -> bytes:
        return bytes((1, adr_ctrl, 0, p, 0, 0, 0, 0, *pmsf))

    disc_type = DISC_TYPE_CD_XA if layout.xa else DISC_TYPE_CD_ROM
    body = (
        point(_adr_ctrl(first), 0xA0, (first.number, disc_type, 0))
        + point(_adr_ctrl(last), 0xA1, (last.number, 0, 0))
        + point(_adr_ctrl(last), 0xA2, lba_to_msf(layout.leadout))
        + b"".join(point(_adr_ctrl(t), t.number, lba_to_msf(t.start)) for t in layout.tracks)
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
    tracks = _medium(ctx).layout.tracks
    out = bytearray(34)
    out[0:2] = be16(len(out) - 2)
    out[2] = (3 << 2) | 2  # last session complete, disc complete, not erasable
    out[3] = tracks[0].number  # first track on the disc
    out[4] = 1  # number of sessions (LSB)
    out[5] = tracks[0].number  # first track in last session (LSB)
    out[6] = tracks[-1].number  # last track in last session (LSB)
    out[7] = 0x00  # no disc ID / bar code / application code
    out[8] = DISC_TYPE_CD_XA if _medium(ctx).layout.xa else DISC_TYPE_CD_ROM
    out[16:20] = b"\xff" * 4  # no next session lead-in (disc complete)
    out[20:24] = b"\xff" * 4  # no last possible lead-out
    return bytes(out)


def _track_for(ctx: Context, addr_type: int, value: int) -> PlacedTrack:
    layout = _medium(ctx).layout
    track = None
    if addr_type == 0:  # the track containing this LBA
        if value < layout.leadout:
            track = layout.track_at(value)
    elif addr_type == 1:  # track number
        track = layout.track(value)
    elif addr_type == 2:  # first track of this session
        track = layout.tracks[0] if value == 1 else None
    else:
        raise illegal_field(1, 1)
    if track is None:
        raise illegal_field(2)
    return track


def read_track_information(ctx: Context) -> bytes:
    c = ctx.cdb
    track = _track_for(ctx, c.u8(1) & 0x03, c.u32(2))
    out = bytearray(36)
    out[0:2] = be16(len(out) - 2)
    out[2] = track.number  # track number (LSB)
    out[3] = 1  # session number (LSB)
    out[5] = track.control  # track mode: the Q CONTROL nibble; not damaged, not copied
    out[6] = track.data_mode  # not blank, not packet, not reserved
    out[7] = 0x00  # no next-writable / last-recorded address
    out[8:12] = be32(track.start)
    out[24:28] = be32(track.length)
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
def _relative_field(frames: int, msf: bool) -> bytes:
    """A track-relative address: signed LBA, or MSF of the distance (no 2 s offset)."""
    if not msf:
        return frames.to_bytes(4, "big", signed=True)
    frames = abs(frames)
    return bytes((0, frames // 4500 % 256, frames // 75 % 60, frames % 75))


def read_subchannel(ctx: Context) -> bytes:
    c = ctx.cdb
    msf = c.bit(1, 1)
    layout = _medium(ctx).layout
    status, position = ctx.device.state.audio.report()
    header = bytes((0, status))
    if not c.bit(2, 6):  # SubQ=0: header only
        return header + be16(0)
    fmt = c.u8(3)
    if fmt == 0x01:  # current position
        position = min(position, layout.leadout - 1)
        track = layout.track_at(position)
        body = (
            bytes((0x01, _adr_ctrl(track), track.number, track.index_at(position)))
            + address_field(position, msf)
            + _relative_field(position - track.start, msf)
        )
    elif fmt == 0x02:
        body = bytes((0x02, 0, 0, 0, 0x00)) + bytes(13) + bytes(2)  # MCVal=0: no catalogue number
    elif fmt == 0x03:
        track = layout.track(c.u8(6))
        if track is None:
            raise illegal_field(6)
        body = bytes((0x03, _adr_ctrl(track), track.number, 0, 0x00)) + bytes(15)  # TCVal=0
    else:
        raise illegal_field(3)
    return header + be16(len(body)) + body


# ------------------------------------------------------------------ PLAY AUDIO
CURRENT_POSITION_LBA = 0xFFFFFFFF


def _play(ctx: Context, start: int, end: int) -> bytes:
    """Play CD-DA from ``start`` to ``end`` (exclusive): both in audio, in order, on the disc."""
    layout = _medium(ctx).layout
    player = ctx.device.state.audio
    if end < start:
        raise illegal_field(7)
    if start < 0 or end > layout.leadout:
        raise SenseError(SenseKey.ILLEGAL_REQUEST, Ascs.LBA_OUT_OF_RANGE, information=max(start, 0))
    if start == end:
        return b""  # MMC: a zero-length play is no error and changes nothing
    if not layout.track_at(start).audio:
        raise SenseError(SenseKey.ILLEGAL_REQUEST, Ascs.ILLEGAL_MODE_FOR_TRACK)
    player.play(start, end)
    return b""


def _start_lba(ctx: Context, lba: int) -> int:
    return ctx.device.state.audio.position() if lba == CURRENT_POSITION_LBA else lba


def play_audio10(ctx: Context) -> bytes:
    start = _start_lba(ctx, ctx.cdb.u32(2))
    return _play(ctx, start, start + ctx.cdb.u16(7))


def play_audio12(ctx: Context) -> bytes:
    start = _start_lba(ctx, ctx.cdb.u32(2))
    return _play(ctx, start, start + ctx.cdb.u32(6))


def play_audio_msf(ctx: Context) -> bytes:
    c = ctx.cdb

    def lba(at: int) -> int:
        m, s, f = c.u8(at), c.u8(at + 1), c.u8(at + 2)
        return (m * 60 + s) * 75 + f - 150

    here = (c.u8(3), c.u8(4), c.u8(5)) == (0xFF, 0xFF, 0xFF)
    start = ctx.device.state.audio.position() if here else lba(3)
    return _play(ctx, start, lba(6))


def pause_resume(ctx: Context) -> bytes:
    player = ctx.device.state.audio
    try:
        if ctx.cdb.bit(8, 0):
            player.resume()
        else:
            player.pause()
    except NotPlaying:
        raise SenseError(SenseKey.ILLEGAL_REQUEST, Ascs.COMMAND_SEQUENCE_ERROR) from None
    return b""


def stop_play_scan(ctx: Context) -> bytes:
    ctx.device.state.audio.stop()
    return b""


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
    CommandSpec(0x45, "PLAY AUDIO(10)", 10, Direction.NONE, play_audio10, _NM),
    CommandSpec(0x47, "PLAY AUDIO MSF", 10, Direction.NONE, play_audio_msf, _NM),
    CommandSpec(0x4B, "PAUSE/RESUME", 10, Direction.NONE, pause_resume, _NM),
    CommandSpec(0x4E, "STOP PLAY/SCAN", 10, Direction.NONE, stop_play_scan, _NM),
    CommandSpec(0xA5, "PLAY AUDIO(12)", 12, Direction.NONE, play_audio12, _NM),
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
