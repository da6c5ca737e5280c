"""A CUE/BIN disc image: raw 2352-byte sectors and user data by LBA, from the sheet's files.

The sheet (:mod:`vhba_responder.cue`) says where each track's sectors live;
this reads them.  ``raw_sector`` gives what READ CD asks for in full: audio
samples as stored, a MODE1/2352 or MODE2/2352 sector as stored, a
MODE1/2048 sector completed with sync, header, EDC and ECC
(:mod:`vhba_responder.cdsector`); pregap and postgap silence is zeros (a
data track's: a MODE1 sector of zeros).  ``user_data`` gives what READ(10)
reads from a data track: the 2048 bytes of MODE1, or of MODE2 form 1.
"""

from __future__ import annotations

from pathlib import Path

from vhba_responder.cdsector import SECTOR, USER, mode1_sector
from vhba_responder.cue import CueError, DiscLayout, Extent, PlacedTrack, layout, parse_cue
from vhba_responder.media import BeforeBlock, FileImage


class AudioSectorError(ValueError):
    """READ(10) of an audio sector: MMC's ILLEGAL MODE FOR THIS TRACK."""


def _find(directory: Path, name: str) -> Path:
    """A FILE of the sheet: next to it, the exact name first, else one that differs in case."""
    exact = directory / name
    if exact.exists():
        return exact
    matches = [p for p in directory.iterdir() if p.name.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    raise CueError(f"FILE {name!r} of the sheet is not in {directory}")


class CueDisc:
    def __init__(self, sheet: Path) -> None:
        try:
            text = sheet.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise CueError(f"cannot read {sheet}: {exc.strerror}") from None
        parsed = parse_cue(text, sheet.name)
        self.path = sheet
        self.files = {name: FileImage(_find(sheet.parent, name)) for name in parsed.files}
        self.layout: DiscLayout = layout(parsed, {n: f.size for n, f in self.files.items()})

    @property
    def size(self) -> int:
        """Bytes of user data the disc pretends to hold: 2048 for every LBA up to the lead-out."""
        return self.layout.leadout * USER

    def pread(self, length: int, offset: int, before_block: BeforeBlock = None) -> bytes:
        """User data of whole 2048-byte blocks (the :class:`ImageSource` READ(10) reads).

        An audio block raises :class:`AudioSectorError`.  ``before_block`` is not
        called: sectors come from several files, each read is one sector.
        """
        first, count = offset // USER, -(-length // USER)
        data = b"".join(self.user_data(lba) for lba in range(first, first + count))
        return data[offset - first * USER :][:length]

    def _extent(self, track: PlacedTrack, lba: int) -> Extent | None:
        for extent in track.extents:
            if extent.lba <= lba < extent.lba + extent.count:
                return extent
        return None

    def _stored(self, track: PlacedTrack, lba: int) -> bytes | None:
        """The sector as the file holds it (its track's size), None for silence."""
        extent = self._extent(track, lba)
        if extent is None or extent.file is None:
            return None
        offset = extent.offset + (lba - extent.lba) * track.sector_size
        return self.files[extent.file].pread(track.sector_size, offset)

    def raw_sector(self, lba: int) -> bytes:
        """The full 2352-byte sector at ``lba``."""
        track = self.layout.track_at(lba)
        stored = self._stored(track, lba)
        if track.sector_size == SECTOR:
            return stored if stored is not None else bytes(SECTOR)
        return mode1_sector(lba, stored if stored is not None else bytes(USER))

    def user_data(self, lba: int) -> bytes:
        """The 2048 user bytes of the data sector at ``lba``."""
        track = self.layout.track_at(lba)
        if track.audio:
            raise AudioSectorError(f"LBA {lba} is in audio track {track.number}")
        if track.mode == "MODE1/2048":
            stored = self._stored(track, lba)
            return stored if stored is not None else bytes(USER)
        raw = self.raw_sector(lba)
        start = 24 if track.mode == "MODE2/2352" else 16  # MODE2 form 1: 8 bytes of subheader
        return raw[start : start + USER]
