"""Test media built on the host: deterministic ISO9660 images and a CUE/BIN mixed-mode CD.

File contents come from a seeded generator, so the same seed always makes
the same image and the expected sha256 of every file is known up front: a
checksum mismatch in the guest is a data-path bug, never test flakiness.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pycdlib

from lab.catalogue.digest import sha256_file
from vhba_responder import cdsector


@dataclass(frozen=True)
class Medium:
    path: Path
    label: str
    files: dict[str, str]  # ISO path (e.g. "/DIR/FILE.BIN") -> sha256

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)

    @classmethod
    def load(cls, path: Path) -> Medium | None:
        """The medium ``build_iso`` wrote at ``path``, or None if it is not (fully) there."""
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        if not path.exists():
            return None
        return cls(path, meta["label"], meta["files"])


# name -> size; sizes straddle sector (2048) and command (128 KiB) boundaries on purpose.
DEFAULT_LAYOUT = {
    "/EMPTY.TXT": 0,
    "/SMALL.TXT": 1,
    "/SECTOR.BIN": 2048,
    "/ODD.BIN": 2048 * 3 + 17,
    "/CMD.BIN": 128 * 1024 + 1,
    "/DATA/BIG.BIN": 3 * 1024 * 1024 + 4096 + 5,
    "/DATA/NESTED/DEEP.BIN": 70_000,
}


def build_iso(out: Path, label: str, seed: int, layout: dict[str, int] | None = None) -> Medium:
    """Write an ISO9660 (Joliet + Rock Ridge) image with seeded file contents."""
    layout = layout if layout is not None else DEFAULT_LAYOUT
    rng = random.Random(seed)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    made_dirs: set[str] = set()
    files: dict[str, str] = {}
    for path, size in layout.items():
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/" + "/".join(parts[:depth])
            if directory not in made_dirs:
                iso.add_directory(
                    directory, rr_name=parts[depth - 1].lower(), joliet_path=directory.lower()
                )
                made_dirs.add(directory)
        data = rng.randbytes(size) if size else b""
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"{path};1",
            rr_name=parts[-1].lower(),
            joliet_path=path.lower(),
        )
        files[path.lower()] = hashlib.sha256(data).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    # The image's volume dates are the build time, so a rebuild differs in its
    # first 64 KiB: write the manifest, then move the finished image into place,
    # so a reader never sees a half-written or swapped image.
    out.with_suffix(".json").write_text(json.dumps({"label": label, "files": files}, indent=2))
    partial = out.with_name(out.name + ".partial")
    iso.write(str(partial))
    iso.close()
    os.replace(partial, out)
    return Medium(out, label, files)


def _iso_once(out: Path, label: str, seed: int, layout: dict[str, int]) -> Medium:
    """The ISO already at ``out``, else a new one: a rebuilt ISO differs in its volume
    dates, and a disc built around it must keep the bytes a guest was given."""
    return Medium.load(out) or build_iso(out, label, seed, layout)


@dataclass(frozen=True)
class DiscTrack:
    """One track of a :class:`MixedDisc` as every reader should see it."""

    number: int
    audio: bool
    start: int  # LBA of INDEX 01
    span_sha256: str  # what a ripper reads for it: INDEX 01 up to the next track's INDEX 01
    span_sectors: int


@dataclass(frozen=True)
class MixedDisc:
    """A CUE/BIN disc built by :func:`build_mixed_cd`: sheet, files, and what it holds."""

    cue: Path
    files: tuple[Path, ...]  # the sheet and its BIN files, all in one directory
    tracks: tuple[DiscTrack, ...]
    leadout: int
    data: Medium  # the ISO9660 of track 1

    def track(self, number: int) -> DiscTrack:
        return self.tracks[number - 1]


# Track 1: an ISO (MODE1/2048); 2: audio with a 2 s pregap held in the file (INDEX 00);
# 3: audio of an odd length; 4: in a second file, after a 1 s PREGAP in no file.
_AUDIO_LAYOUT = {"t2_pregap": 150, "t2": 225, "t3": 301, "t4_pregap": 75, "t4": 188}
_SECTOR = 2352


def build_mixed_cd(out_dir: Path, seed: int) -> MixedDisc:
    """A data track plus three CD-DA tracks of seeded samples, as CUE + BIN files.

    The expected bytes of every track are known here, independently of any
    responder: a ripped track must equal them exactly (silence of a PREGAP
    that is in no file reads as zeros).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _iso_once(out_dir / "data.iso", "VHBALAB_MIXED", seed, {"/TRACK1.BIN": 100_000})
    rng = random.Random(seed)
    n = _AUDIO_LAYOUT
    pregap2, audio2, audio3, audio4 = (
        rng.randbytes(n[key] * _SECTOR) for key in ("t2_pregap", "t2", "t3", "t4")
    )
    (out_dir / "audio.bin").write_bytes(pregap2 + audio2 + audio3)
    (out_dir / "last.bin").write_bytes(audio4)
    blocks = data.size // 2048

    def msf(frames: int) -> str:
        return f"{frames // 4500:02d}:{frames // 75 % 60:02d}:{frames % 75:02d}"

    sheet = (
        'FILE "data.iso" BINARY\n  TRACK 01 MODE1/2048\n    INDEX 01 00:00:00\n'
        'FILE "audio.bin" BINARY\n  TRACK 02 AUDIO\n    INDEX 00 00:00:00\n'
        f"    INDEX 01 {msf(n['t2_pregap'])}\n"
        f"  TRACK 03 AUDIO\n    INDEX 01 {msf(n['t2_pregap'] + n['t2'])}\n"
        'FILE "last.bin" BINARY\n  TRACK 04 AUDIO\n'
        f"    PREGAP {msf(n['t4_pregap'])}\n    INDEX 01 00:00:00\n"
    )
    cue = out_dir / "mixed.cue"
    cue.write_text(sheet)
    start2 = blocks + n["t2_pregap"]
    start3 = start2 + n["t2"]
    start4 = start3 + n["t3"] + n["t4_pregap"]
    leadout = start4 + n["t4"]
    silence = bytes(n["t4_pregap"] * _SECTOR)

    def track(number: int, start: int, span: bytes) -> DiscTrack:
        return DiscTrack(
            number, True, start, hashlib.sha256(span).hexdigest(), len(span) // _SECTOR
        )

    tracks = (
        DiscTrack(1, False, 0, data.sha256, blocks),
        track(2, start2, audio2),
        track(3, start3, audio3 + silence),
        track(4, start4, audio4),
    )
    files = (cue, data.path, out_dir / "audio.bin", out_dir / "last.bin")
    return MixedDisc(cue, files, tracks, leadout, data)


@dataclass(frozen=True)
class RawDisc:
    """A CUE/BIN disc of raw 2352-byte data sectors built by :func:`build_raw_cd`."""

    cue: Path
    files: tuple[Path, ...]
    bin: Path  # every sector of the disc, as the drive must return it raw
    mode1: Medium  # the ISO9660 that track 1 (MODE1/2352) carries
    mode2_start: int  # LBA of track 2 (MODE2/2352, XA form 1 sectors)
    mode2_data: bytes  # the user data of track 2's sectors, 2048 bytes each
    leadout: int

    def raw(self, lba: int) -> bytes:
        with self.bin.open("rb") as fh:
            fh.seek(lba * _SECTOR)
            return fh.read(_SECTOR)


def _mode2_form1(lba: int, user: bytes) -> bytes:
    """A CD-ROM XA Mode 2 Form 1 sector: the header is zero while the ECC is computed."""
    sector = bytearray(_SECTOR)
    sector[:12] = cdsector.SYNC
    subheader = bytes((0, 0, 0x08, 0))  # file, channel, submode: data, coding
    sector[16:24] = subheader * 2
    sector[24:2072] = user
    sector[2072:2076] = cdsector.edc(bytes(sector[16:2072])).to_bytes(4, "little")
    cdsector.add_ecc(sector)
    sector[12:16] = cdsector.header(lba, 2)
    return bytes(sector)


def build_raw_cd(out_dir: Path, seed: int, mode2_sectors: int = 40) -> RawDisc:
    """Track 1: an ISO as raw MODE1/2352 sectors; track 2: MODE2/2352 (XA form 1), one BIN.

    The BIN holds the sectors as a disc has them (sync, header, EDC/ECC), so a
    drive must serve READ(10) from the user data inside them and READ CD with
    the BIN's own bytes, never recompute them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    iso = _iso_once(out_dir / "raw-data.iso", "VHBALAB_RAW", seed, {"/RAW.BIN": 60_000})
    data = iso.path.read_bytes()
    blocks = len(data) // 2048
    mode2_data = random.Random(seed).randbytes(mode2_sectors * 2048)
    raw = out_dir / "raw.bin"
    with raw.open("wb") as fh:
        for lba in range(blocks):
            fh.write(cdsector.mode1_sector(lba, data[lba * 2048 : (lba + 1) * 2048]))
        for n in range(mode2_sectors):
            fh.write(_mode2_form1(blocks + n, mode2_data[n * 2048 : (n + 1) * 2048]))
    frames = blocks
    start2 = f"{frames // 4500:02d}:{frames // 75 % 60:02d}:{frames % 75:02d}"
    cue = out_dir / "raw.cue"
    cue.write_text(
        'FILE "raw.bin" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n'
        f"  TRACK 02 MODE2/2352\n    INDEX 01 {start2}\n"
    )
    return RawDisc(cue, (cue, raw), raw, iso, blocks, mode2_data, blocks + mode2_sectors)
