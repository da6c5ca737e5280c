"""The mixed CD the audio group uses: its sheet, its files and what it says each track holds."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from lab.build.media import build_mixed_cd, build_raw_cd
from vhba_responder.cue import parse_cue
from vhba_responder.media import Medium


def test_every_track_holds_what_the_disc_says(tmp_path: Path) -> None:
    disc = build_mixed_cd(tmp_path, seed=18)
    sheet = parse_cue(disc.cue.read_text(), disc.cue.name)
    assert [t.mode for t in sheet.tracks] == ["MODE1/2048", "AUDIO", "AUDIO", "AUDIO"]
    assert {p.name for p in disc.files} == {"mixed.cue", "data.iso", "audio.bin", "last.bin"}
    medium = Medium.open(disc.cue)
    layout = medium.layout
    assert [t.start for t in layout.tracks] == [t.start for t in disc.tracks]
    assert layout.leadout == disc.leadout
    for track in disc.tracks[1:]:
        span = b"".join(
            medium.raw_sector(lba) for lba in range(track.start, track.start + track.span_sectors)
        )
        assert hashlib.sha256(span).hexdigest() == track.span_sha256, track.number
    # The last track's span ends at the lead-out; track 3's takes in track 4's silent pregap.
    t3, t4 = disc.track(3), disc.track(4)
    assert t3.start + t3.span_sectors == t4.start
    assert t4.start + t4.span_sectors == disc.leadout
    assert medium.raw_sector(t4.start - 1) == bytes(2352)


def test_the_same_seed_gives_the_same_audio(tmp_path: Path) -> None:
    one = build_mixed_cd(tmp_path / "a", seed=3)
    two = build_mixed_cd(tmp_path / "b", seed=3)
    assert [t.span_sha256 for t in one.tracks[1:]] == [t.span_sha256 for t in two.tracks[1:]]


def test_the_raw_cd_holds_its_iso_and_xa_data_in_raw_sectors(tmp_path: Path) -> None:
    disc = build_raw_cd(tmp_path, seed=5, mode2_sectors=4)
    sheet = parse_cue(disc.cue.read_text(), disc.cue.name)
    assert [t.mode for t in sheet.tracks] == ["MODE1/2352", "MODE2/2352"]
    medium = Medium.open(disc.cue)
    assert [t.start for t in medium.layout.tracks] == [0, disc.mode2_start]
    assert medium.layout.leadout == disc.leadout == disc.mode2_start + 4
    iso = disc.mode1.path.read_bytes()
    assert medium.read_blocks(0, len(iso) // 2048) == iso  # READ(10): user data of raw sectors
    xa = medium.read_blocks(disc.mode2_start, 4)
    assert xa == disc.mode2_data
    first = disc.raw(disc.mode2_start)
    assert first[15] == 2 and first[16:24] == bytes((0, 0, 8, 0)) * 2  # mode 2, form 1 data
    assert medium.raw_sector(disc.mode2_start) == first
    assert medium.raw_sector(16) == disc.raw(16)


def test_a_disc_built_again_keeps_the_bytes_a_guest_was_given(tmp_path: Path) -> None:
    """Each test builds its disc again; the ISO inside must not change (its volume dates)."""
    first = build_raw_cd(tmp_path, seed=5, mode2_sectors=1).bin.read_bytes()
    mixed = build_mixed_cd(tmp_path / "mixed", seed=5).data.sha256
    time.sleep(1.1)  # ISO9660 dates have one-second resolution
    assert build_raw_cd(tmp_path, seed=5, mode2_sectors=1).bin.read_bytes() == first
    assert build_mixed_cd(tmp_path / "mixed", seed=5).data.sha256 == mixed
