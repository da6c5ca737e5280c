"""CUE/BIN discs read back: audio as stored, data completed to raw sectors, silence as zeros."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vhba_responder.cdsector import SYNC, edc, header
from vhba_responder.cue import CueError
from vhba_responder.cuedisc import AudioSectorError, CueDisc

DATA_SECTORS, AUDIO1, AUDIO2 = 40, 30, 20


def _disc(tmp_path: Path) -> tuple[CueDisc, bytes, bytes, bytes]:
    rnd = random.Random(13)
    data = rnd.randbytes(DATA_SECTORS * 2048)
    audio1, audio2 = rnd.randbytes(AUDIO1 * 2352), rnd.randbytes(AUDIO2 * 2352)
    (tmp_path / "Data.BIN").write_bytes(data + audio1)
    (tmp_path / "second.bin").write_bytes(audio2)
    (tmp_path / "disc.cue").write_text(
        'FILE "data.bin" BINARY\n'  # differs in case from the file: found anyway
        "  TRACK 01 MODE1/2048\n    INDEX 01 00:00:00\n"
        "  TRACK 02 AUDIO\n    INDEX 01 00:00:40\n"
        'FILE "second.bin" BINARY\n'
        "  TRACK 03 AUDIO\n    PREGAP 00:00:05\n    INDEX 01 00:00:00\n"
    )
    return CueDisc(tmp_path / "disc.cue"), data, audio1, audio2


def test_the_data_track_reads_as_2048_byte_blocks_and_as_raw_sectors(tmp_path: Path) -> None:
    disc, data, _, _ = _disc(tmp_path)
    assert disc.user_data(7) == data[7 * 2048 : 8 * 2048]
    raw = disc.raw_sector(7)
    assert len(raw) == 2352 and raw[:12] == SYNC and raw[12:16] == header(7)
    assert raw[16:2064] == data[7 * 2048 : 8 * 2048]
    assert int.from_bytes(raw[2064:2068], "little") == edc(raw[:2064])


def test_audio_tracks_read_as_stored_with_the_pregap_silent(tmp_path: Path) -> None:
    disc, _, audio1, audio2 = _disc(tmp_path)
    _, t2, t3 = disc.layout.tracks
    assert (t2.start, t3.pregap_start, t3.start, disc.layout.leadout) == (40, 70, 75, 95)
    assert disc.raw_sector(41) == audio1[2352 : 2 * 2352]
    assert disc.raw_sector(72) == bytes(2352), "PREGAP silence is in no file"
    assert disc.raw_sector(75) == audio2[:2352] and disc.raw_sector(94) == audio2[-2352:]
    with pytest.raises(AudioSectorError, match="LBA 41 is in audio track 2"):
        disc.user_data(41)
    with pytest.raises(IndexError):
        disc.raw_sector(95)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.cue").write_text('FILE "gone.bin" BINARY\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n')
    with pytest.raises(CueError, match=r"FILE 'gone\.bin' of the sheet is not in"):
        CueDisc(tmp_path / "x.cue")
