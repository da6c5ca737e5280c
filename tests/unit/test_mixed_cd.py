"""The mixed CD the audio group uses: its sheet, its files and what it says each track holds."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lab.media import build_mixed_cd
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
