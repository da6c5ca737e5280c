"""CUE sheets: the track layout of a multi-track disc image (CUE/BIN), as a pure model.

A CUE sheet names one or more data files (``FILE "x.bin" BINARY``) and the
tracks in them (``TRACK 02 AUDIO``), each with its index points (``INDEX 01
03:12:40``: minutes, seconds, frames of 1/75 s, relative to the file).  This
module parses that text (:func:`parse_cue`) and, given the sizes of the
files, places every track on the disc (:func:`layout`): its first LBA, its
pregap, its length, and where each of its sectors lives in which file.

Conventions (those of cdrdao and libcdio):

* the first track's ``INDEX 01`` is LBA 0; sectors before it in the first
  file (a first track's ``INDEX 00``) are not addressable here;
* one file's index points are frame counts from the file's start, and its
  bytes are laid out track after track, each sector the size of the track it
  belongs to (``MODE1/2048``: 2048 bytes; ``AUDIO``, ``MODE1/2352``,
  ``MODE2/2352``: 2352);
* ``PREGAP mm:ss:ff`` adds that many silent (zero) sectors before the track's
  ``INDEX 01`` that are in no file (``POSTGAP``: after the track);
  ``INDEX 00`` marks a pregap that is in the file;
* the next file starts right after the last sector of the previous one.

Errors name the sheet and the line: ``disc.cue:7: INDEX 01 before any TRACK``.
Stdlib only, Python >= 3.9, like the rest of the responder.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

FRAMES_PER_SECOND = 75
#: Absolute time of LBA 0 on a CD (the 2 s lead-in pregap): MSF = LBA + 150.
MSF_OFFSET = 150
SECTOR_SIZES = {"AUDIO": 2352, "MODE1/2048": 2048, "MODE1/2352": 2352, "MODE2/2352": 2352}
_MSF = re.compile(r"^(\d{1,3}):([0-5]\d):([0-6]\d|7[0-4])$")
# Commands a sheet may hold that change nothing in the layout.
_IGNORED = {"REM", "CATALOG", "CDTEXTFILE", "TITLE", "PERFORMER", "SONGWRITER", "ISRC", "FLAGS"}


class CueError(ValueError):
    """A CUE sheet this responder cannot use; the message names the file and line."""


def msf_frames(text: str) -> int:
    """``"03:12:40"`` as a frame count (75 frames a second)."""
    match = _MSF.match(text)
    if not match:
        raise ValueError(f"{text!r} is not mm:ss:ff (frames 00-74)")
    minutes, seconds, frames = (int(g) for g in match.groups())
    return (minutes * 60 + seconds) * FRAMES_PER_SECOND + frames


def lba_msf(lba: int) -> tuple[int, int, int]:
    """The absolute (M, S, F) address of ``lba``, as READ TOC with MSF=1 reports it."""
    frames = lba + MSF_OFFSET
    return frames // (60 * FRAMES_PER_SECOND), frames // FRAMES_PER_SECOND % 60, frames % 75


@dataclass
class CueTrack:
    number: int
    mode: str  # a key of SECTOR_SIZES
    file: str  # the FILE it is in
    line: int  # where its TRACK line is, for error messages
    indexes: dict[int, int] = field(default_factory=dict)  # index number -> frame in file
    pregap: int = 0  # PREGAP frames: silence in no file
    postgap: int = 0

    @property
    def sector_size(self) -> int:
        return SECTOR_SIZES[self.mode]

    @property
    def audio(self) -> bool:
        return self.mode == "AUDIO"


@dataclass
class CueSheet:
    name: str
    tracks: list[CueTrack]

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(t.file for t in self.tracks))


def parse_cue(text: str, name: str = "disc.cue") -> CueSheet:
    """Parse a CUE sheet; every error is a :class:`CueError` naming the line."""
    tracks: list[CueTrack] = []
    current_file: str | None = None

    def fail(line: int, why: str) -> CueError:
        return CueError(f"{name}:{line}: {why}")

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            continue
        try:
            words = shlex.split(line, posix=True)
        except ValueError as exc:
            raise fail(number, f"cannot split {line!r}: {exc}") from None
        command, args = words[0].upper(), words[1:]
        if command in _IGNORED:
            continue
        if command == "FILE":
            if len(args) != 2:
                raise fail(number, 'FILE needs a name and a type: FILE "disc.bin" BINARY')
            if args[1].upper() != "BINARY":
                raise fail(
                    number,
                    f"file type {args[1]} is not supported: use BINARY (raw little-endian "
                    "sectors; convert WAVE/MP3 audio to raw first)",
                )
            current_file = args[0]
        elif command == "TRACK":
            if current_file is None:
                raise fail(number, "TRACK before any FILE")
            if len(args) != 2 or not args[0].isdigit():
                raise fail(number, "TRACK needs a number and a mode: TRACK 01 MODE1/2352")
            mode = args[1].upper()
            if mode not in SECTOR_SIZES:
                raise fail(number, f"track mode {args[1]} is not supported; use one of "
                           f"{', '.join(SECTOR_SIZES)}")  # fmt: skip
            track_no = int(args[0])
            expected = tracks[-1].number + 1 if tracks else None
            if not 1 <= track_no <= 99 or (expected is not None and track_no != expected):
                want = f"{expected:02d}" if expected else "01-99"
                raise fail(number, f"TRACK {args[0]} out of order (expected {want})")
            tracks.append(CueTrack(track_no, mode, current_file, number))
        elif command in ("INDEX", "PREGAP", "POSTGAP"):
            if not tracks:
                raise fail(number, f"{command} before any TRACK")
            track = tracks[-1]
            try:
                if command == "INDEX":
                    if len(args) != 2 or not args[0].isdigit():
                        raise ValueError("INDEX needs a number and mm:ss:ff")
                    index, frames = int(args[0]), msf_frames(args[1])
                    if index in track.indexes:
                        raise ValueError(f"INDEX {args[0]} given twice for TRACK {track.number}")
                    if track.indexes and frames < max(track.indexes.values()):
                        raise ValueError(f"INDEX {args[0]} at {args[1]} goes backwards")
                    track.indexes[index] = frames
                elif len(args) != 1:
                    raise ValueError(f"{command} needs mm:ss:ff")
                elif command == "PREGAP":
                    if track.indexes:
                        raise ValueError("PREGAP must come before the track's INDEX lines")
                    track.pregap = msf_frames(args[0])
                else:
                    track.postgap = msf_frames(args[0])
            except ValueError as exc:
                raise fail(number, str(exc)) from None
        else:
            raise fail(number, f"unknown command {words[0]}")
    if not tracks:
        raise CueError(f"{name}: no TRACK in the sheet")
    for track in tracks:
        if 1 not in track.indexes:
            raise fail(track.line, f"TRACK {track.number:02d} has no INDEX 01")
    return CueSheet(name, tracks)


@dataclass(frozen=True)
class Extent:
    """``count`` sectors from LBA ``lba`` on: in ``file`` from byte ``offset``, or silence."""

    lba: int
    count: int
    file: str | None  # None: a PREGAP (zeros, in no file)
    offset: int


@dataclass(frozen=True)
class PlacedTrack:
    number: int
    mode: str
    sector_size: int
    start: int  # LBA of INDEX 01
    pregap_start: int  # LBA where the track's pregap (INDEX 00 or PREGAP) begins
    end: int  # first LBA after the track
    extents: tuple[Extent, ...]

    @property
    def audio(self) -> bool:
        return self.mode == "AUDIO"

    @property
    def length(self) -> int:
        """Sectors from INDEX 01 to the end of the track, as READ TRACK INFORMATION sizes it."""
        return self.end - self.start

    @property
    def control(self) -> int:
        """The Q sub-channel CONTROL nibble: 4 for data; 0 for audio (two channels,
        no pre-emphasis, copy prohibited: a sheet's FLAGS are not modelled)."""
        return 0 if self.audio else 4

    @property
    def data_mode(self) -> int:
        """READ TRACK INFORMATION's data mode: 1 (Mode 1), 2 (Mode 2), 0xF for audio."""
        return {"AUDIO": 0x0F, "MODE2/2352": 2}.get(self.mode, 1)

    def index_at(self, lba: int) -> int:
        """The Q INDEX of ``lba``: 0 in the pregap, 1 from INDEX 01 on (later
        indexes are not modelled: they matter to no reader Linux has)."""
        return 0 if lba < self.start else 1


@dataclass(frozen=True)
class DiscLayout:
    tracks: tuple[PlacedTrack, ...]

    @classmethod
    def plain(cls, blocks: int) -> DiscLayout:
        """The disc an ISO image is: one MODE1/2048 track of ``blocks`` sectors at LBA 0."""
        extent = Extent(0, blocks, "", 0)
        return cls((PlacedTrack(1, "MODE1/2048", 2048, 0, 0, blocks, (extent,)),))

    @property
    def leadout(self) -> int:
        return self.tracks[-1].end

    @property
    def xa(self) -> bool:
        """Whether the disc is CD-ROM XA (a MODE2 track): the full TOC's disc type 0x20."""
        return any(t.mode == "MODE2/2352" for t in self.tracks)

    def track(self, number: int) -> PlacedTrack | None:
        first = self.tracks[0].number
        return self.tracks[number - first] if 0 <= number - first < len(self.tracks) else None

    def track_at(self, lba: int) -> PlacedTrack:
        for track in self.tracks:
            if track.pregap_start <= lba < track.end:
                return track
        raise IndexError(f"LBA {lba} is outside the disc (lead-out at {self.leadout})")


def layout(sheet: CueSheet, sizes: Mapping[str, int]) -> DiscLayout:
    """Place ``sheet``'s tracks on the disc, given each file's size in bytes."""
    placed: list[PlacedTrack] = []
    disc = 0  # the LBA the current file's frame 0 maps to (for the first file: see below)
    for file_no, name in enumerate(sheet.files):
        if name not in sizes:
            raise CueError(f"{sheet.name}: no size for FILE {name!r}")
        in_file = [t for t in sheet.tracks if t.file == name]
        # Byte offset in the file of each track's first index, walking the file's
        # tracks in order: each track's sectors have that track's size.
        starts: list[int] = []
        byte = 0
        for k, track in enumerate(in_file):
            first = min(track.indexes.values())
            if k:
                prev = in_file[k - 1]
                byte += (first - min(prev.indexes.values())) * prev.sector_size
            starts.append(byte)
        last = in_file[-1]
        tail_bytes = sizes[name] - starts[-1]
        if tail_bytes < 0 or tail_bytes % last.sector_size:
            raise CueError(
                f"{sheet.name}: FILE {name!r} is {sizes[name]} bytes, which does not end on a "
                f"whole {last.sector_size}-byte sector of TRACK {last.number:02d}"
            )
        file_frames = min(last.indexes.values()) + tail_bytes // last.sector_size
        if file_no == 0:
            disc = -sheet.tracks[0].indexes[1] - sheet.tracks[0].pregap
        for k, track in enumerate(in_file):
            first = min(track.indexes.values())
            nxt = min(in_file[k + 1].indexes.values()) if k + 1 < len(in_file) else file_frames
            disc += track.pregap  # silence before this track, in no file
            region_start = disc + first  # INDEX 00 if the file holds a pregap, else INDEX 01
            extents = []
            if track.pregap:
                extents.append(Extent(region_start - track.pregap, track.pregap, None, 0))
            count = nxt - first
            if count > 0:
                extents.append(Extent(region_start, count, name, starts[k]))
            end = disc + nxt
            if track.postgap:  # silence after the track, in no file
                extents.append(Extent(end, track.postgap, None, 0))
                end += track.postgap
            begin = max(region_start - track.pregap, 0)
            visible = tuple(e for e in extents if e.lba + e.count > 0)
            placed.append(PlacedTrack(
                track.number, track.mode, track.sector_size, disc + track.indexes[1],
                begin, end, visible,
            ))  # fmt: skip
            disc += track.postgap
        disc += file_frames
    return DiscLayout(tuple(placed))
