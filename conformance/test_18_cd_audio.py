"""A mixed-mode CD (a data track, three CD-DA tracks) from CUE/BIN, read as users read it.

The disc is built on the host (``lab.build.media.build_mixed_cd``), so what each
track holds is known without asking any responder: the TOC must match the
sheet, every audio track must rip bit-exactly (cdparanoia, and the cdrom
layer's CDROMREADAUDIO), raw READ CD transfers of odd sizes (with and
without sub-channel) must come back exact, PLAY AUDIO's position must move,
and the data track must still mount.  These are the paths Linux sends to an
audio or mixed disc: 2352-byte sectors, transfers that are multiples of
neither 2048 nor a page.  A second disc (``lab.build.media.build_raw_cd``) keeps its
data in raw sectors (MODE1/2352, MODE2/2352 XA form 1): READ(10) must find the
user data inside them, READ CD must return the BIN's own bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scsi_helpers import (
    checksum_mismatches,
    insert,
    mounted_checksums,
    restart_drive,
    restore_cd1,
    sg_raw,
    upload_mixed_cd,
    upload_sheet,
    wait_props,
)

from lab.build.media import MixedDisc, RawDisc, build_raw_cd
from lab.cell.drives import DriveNode
from lab.cell.env import GUEST_MEDIA, CellEnv
from lab.vm.guest import command_text

CDAUDIO = Path(__file__).resolve().parent / "guest" / "cdaudio.py"
GUEST_CDAUDIO = "/usr/local/lib/vhba-cdaudio.py"
SECTOR = 2352
RAW_DIR = f"{GUEST_MEDIA}/raw"


@dataclass
class Tray:
    """Which of this module's discs drive 0 holds: each goes in once, not once per test.

    A disc change costs seconds (the load, Linux seeing the new size, udev);
    the tests only read, so consecutive tests on one disc share its insertion.
    """

    cell: CellEnv
    holds: str | None = None

    def hold(self, name: str, cue: str, size: int) -> DriveNode:
        assert self.cell.drive is not None
        if not self.cell.drive.running():  # an earlier group (the attacker's) may stop it
            restart_drive(self.cell)
            self.holds = None
        if self.holds != name:
            self.holds = None  # until the insertion has succeeded
            insert(self.cell, cue, size=size)
            self.holds = name
        return self.cell.nodes[0]


@pytest.fixture(scope="module")
def tray(cell: CellEnv) -> Iterator[Tray]:
    """Drive 0's disc for this module; cd1 back in it afterwards."""
    if cell.broken:
        pytest.skip(f"cell broken: {cell.broken}")
    cell.guest.upload(CDAUDIO, GUEST_CDAUDIO, mode=0o755)
    held = Tray(cell)
    try:
        yield held
    finally:
        if held.holds is not None and not cell.broken:
            restore_cd1(cell)


@pytest.fixture
def mixed(cell: CellEnv, drive: DriveNode, tray: Tray) -> tuple[MixedDisc, DriveNode]:
    """The mixed disc (built for this cell, uploaded once) in drive 0."""
    disc, cue = upload_mixed_cd(cell)
    return disc, tray.hold("mixed", cue, disc.leadout * 2048)


def _cdaudio(cell: CellEnv, node: str, *args: str) -> dict:
    argv = ["python3", GUEST_CDAUDIO, node, *args]
    out = cell.guest.run(argv, timeout=300).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert "error" not in result, f"{' '.join(args)}: {result['error']}"
    return result


def test_the_toc_is_the_sheets(cell: CellEnv, mixed: tuple[MixedDisc, DriveNode]) -> None:
    """CDROMREADTOCHDR/ENTRY (LBA and MSF), as every CD player reads them."""
    disc, node = mixed
    toc = _cdaudio(cell, node.sr, "toc")
    assert (toc["first"], toc["last"]) == (1, 4), toc
    got = [(e["track"], e["ctrl"], e["lba"]) for e in toc["entries"]]
    want = [(t.number, 0 if t.audio else 4, t.start) for t in disc.tracks]
    assert got == [*want, (0xAA, 0, disc.leadout)], got
    for entry in toc["entries"]:
        frames = entry["lba"] + 150
        assert entry["msf"] == [frames // 4500, frames // 75 % 60, frames % 75], entry


def test_udev_counts_the_tracks(cell: CellEnv, mixed: tuple[MixedDisc, DriveNode]) -> None:
    _, node = mixed
    want = {"ID_CDROM_MEDIA_TRACK_COUNT_DATA": "1", "ID_CDROM_MEDIA_TRACK_COUNT_AUDIO": "3"}
    props = wait_props(cell.guest, node.sr, want)
    assert {k: props.get(k) for k in want} == want, props


def test_cd_info_agrees_with_the_sheet(cell: CellEnv, mixed: tuple[MixedDisc, DriveNode]) -> None:
    disc, node = mixed
    res = cell.guest.run(
        ["cd-info", "--no-cddb", "--no-device-info", "-C", node.sr], timeout=300, check=False
    )
    rows = re.findall(r"^\s*(\d+): \d\d:\d\d:\d\d\s+(\d+)\s+(\w+)", res.stdout, re.MULTILINE)
    got = [(int(n), int(lsn), kind) for n, lsn, kind in rows]
    want = [(t.number, t.start, "audio" if t.audio else "data") for t in disc.tracks]
    assert got == [*want, (170, disc.leadout, "leadout")], res.stdout[-2000:] + res.stderr


@pytest.mark.slow
def test_cdrdao_reads_the_same_toc(cell: CellEnv, mixed: tuple[MixedDisc, DriveNode]) -> None:
    _, node = mixed
    read_toc = ["cdrdao", "read-toc", "--device", node.sg, "--fast-toc", "/tmp/mixed.toc"]
    res = cell.guest.sh(
        f"rm -f /tmp/mixed.toc; {command_text(read_toc)} && cat /tmp/mixed.toc",
        timeout=600,
        check=False,
    )
    assert res.rc == 0, f"cdrdao read-toc failed (rc {res.rc}): {res.stderr[-1500:]}"
    assert re.findall(r"^TRACK (\w+)", res.stdout, re.MULTILINE) == [
        "MODE1", "AUDIO", "AUDIO", "AUDIO",
    ], res.stdout  # fmt: skip


@pytest.mark.parametrize("track", [2, 3, 4])
def test_cdparanoia_rips_each_track_bit_exactly(
    cell: CellEnv, mixed: tuple[MixedDisc, DriveNode], track: int
) -> None:
    disc, node = mixed
    want = disc.track(track)
    out = f"/tmp/rip-{track}.raw"
    rip = command_text(["cdparanoia", "-q", "-Z", "-r", "-d", node.sr, track, out])
    res = cell.guest.sh(
        f"{command_text(['rm', '-f', out])}; {rip} && {command_text(['sha256sum', out])}"
        f" && {command_text(['stat', '-c', '%s', out])}",
        timeout=600,
        check=False,
    )
    assert res.rc == 0, f"cdparanoia failed (rc {res.rc}): {res.stderr[-1500:]}"
    digest, size = res.stdout.split()[0], int(res.stdout.split()[-1])
    assert size == want.span_sectors * SECTOR, f"track {track}: {size} bytes ripped"
    assert digest == want.span_sha256, f"track {track}: the rip differs from the BIN's bytes"


def test_cdromreadaudio_rips_a_track(cell: CellEnv, mixed: tuple[MixedDisc, DriveNode]) -> None:
    disc, node = mixed
    want = disc.track(3)
    got = _cdaudio(cell, node.sr, "rip", str(want.start), str(want.span_sectors))
    assert got["sha256"] == want.span_sha256, got


def _audio_bytes(disc: MixedDisc, lba: int, count: int) -> bytes:
    """Sectors of tracks 2-3 straight from audio.bin (its first sector is LBA track 1's end)."""
    first = disc.track(2).start - 150  # the file starts with track 2's 2 s INDEX 00
    data = (disc.cue.parent / "audio.bin").read_bytes()
    return data[(lba - first) * SECTOR : (lba - first + count) * SECTOR]


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _check_q(q: bytes, disc: MixedDisc, lba: int) -> None:
    track = 2 if lba < disc.track(3).start else 3
    frames = lba + 150
    absolute = bytes(_bcd(v) for v in (frames // 4500, frames // 75 % 60, frames % 75))
    assert q[0] & 0x0F == 1 and q[1] == _bcd(track) and q[7:10] == absolute, (lba, q.hex())


@pytest.mark.parametrize("count", [1, 7, 26])
@pytest.mark.parametrize("sub", [0, 16, 96])
def test_odd_sized_read_cd_transfers_are_exact(
    cell: CellEnv, mixed: tuple[MixedDisc, DriveNode], count: int, sub: int
) -> None:
    """READ CD of CD-DA sectors through SG_IO: 2352 (+16 Q or +96 raw P-W) bytes each."""
    disc, node = mixed
    lba = disc.track(3).start - 3  # across the boundary of tracks 2 and 3
    per = SECTOR + sub
    selection = {0: 0, 16: 2, 96: 1}[sub]
    cdb = bytes((0xBE, 0x04, *lba.to_bytes(4, "big"), *count.to_bytes(3, "big"), 0x10,
                 selection, 0))  # fmt: skip
    res = sg_raw(cell.guest, node.sg, cdb, alloc=count * per)
    assert res.good and len(res.data) == count * per, res.describe()
    want = _audio_bytes(disc, lba, count)
    for k in range(count):
        sector = res.data[k * per : k * per + SECTOR]
        assert sector == want[k * SECTOR : (k + 1) * SECTOR], f"sector {lba + k} differs"
        tail = res.data[k * per + SECTOR : (k + 1) * per]
        if sub == 16:
            _check_q(tail[:10], disc, lba + k)
        elif sub == 96:
            q = bytes(
                sum(((tail[8 * i + j] >> 6) & 1) << (7 - j) for j in range(8)) for i in range(10)
            )
            _check_q(q, disc, lba + k)


@pytest.mark.slow
def test_play_audio_moves_pauses_and_resumes(
    cell: CellEnv, mixed: tuple[MixedDisc, DriveNode]
) -> None:
    """CDROMPLAYMSF of track 4, then CDROMSUBCHNL around CDROMPAUSE / CDROMRESUME."""
    disc, node = mixed
    start, end = disc.track(4).start, disc.leadout
    got = _cdaudio(cell, node.sr, "play", str(start), str(end))
    playing, paused, still = got["playing"], got["paused"], got["still"]
    assert playing["status"] == 0x11 and playing["track"] == 4, got
    assert start <= playing["abs"] < end and playing["rel"] == playing["abs"] - start, got
    assert paused["status"] == 0x12 and still["abs"] == paused["abs"], got
    assert got["resumed"]["status"] == 0x11, got
    assert got["ended"]["status"] in (0x13, 0x15), f"play never completed: {got}"


def test_the_data_track_mounts(cell: CellEnv, mixed: tuple[MixedDisc, DriveNode]) -> None:
    disc, node = mixed
    got = mounted_checksums(cell.guest, node.sr, "iso9660", list(disc.data.files))
    assert not checksum_mismatches(disc.data.files, got)


@pytest.fixture
def raw_cd(cell: CellEnv, drive: DriveNode, tray: Tray) -> tuple[RawDisc, DriveNode]:
    """A disc of raw data sectors (MODE1/2352, MODE2/2352 XA form 1) in drive 0."""
    disc = build_raw_cd(cell.cell_dir / "raw-cd", seed=19)
    cue = upload_sheet(cell, disc.files, RAW_DIR)
    return disc, tray.hold("raw", cue, disc.leadout * 2048)


def _read_cd(lba: int, sector_type: int, flags: int) -> bytes:
    """READ CD of one sector: expected ``sector_type`` (0 any, 2 Mode 1, 4 form 1), ``flags``."""
    return bytes((0xBE, sector_type << 2, *lba.to_bytes(4, "big"), 0, 0, 1, flags, 0, 0))


def test_the_raw_mode1_track_mounts(cell: CellEnv, raw_cd: tuple[RawDisc, DriveNode]) -> None:
    """READ(10) of a MODE1/2352 track: the user data inside the BIN's raw sectors."""
    disc, node = raw_cd
    got = mounted_checksums(cell.guest, node.sr, "iso9660", list(disc.mode1.files))
    assert not checksum_mismatches(disc.mode1.files, got)


def test_read_10_of_the_mode2_track_is_its_form1_data(
    cell: CellEnv, raw_cd: tuple[RawDisc, DriveNode]
) -> None:
    disc, node = raw_cd
    dd = ["dd", f"if={node.sr}", "bs=2048", f"skip={disc.mode2_start}", "count=4",
          "iflag=direct", "status=none"]  # fmt: skip
    got = cell.guest.sh(f"{command_text(dd)} | sha256sum").stdout.split()[0]
    assert got == hashlib.sha256(disc.mode2_data[: 4 * 2048]).hexdigest()


@pytest.mark.parametrize("where", ["mode1", "mode1_last", "mode2_first", "mode2_last"])
def test_read_cd_returns_the_bins_raw_sectors(
    cell: CellEnv, raw_cd: tuple[RawDisc, DriveNode], where: str
) -> None:
    """Sync, header, (sub-header,) user data, EDC/ECC: the BIN's bytes, not recomputed ones."""
    disc, node = raw_cd
    lba = {"mode1": 16, "mode1_last": disc.mode2_start - 1, "mode2_first": disc.mode2_start,
           "mode2_last": disc.leadout - 1}[where]  # fmt: skip
    res = sg_raw(cell.guest, node.sg, _read_cd(lba, 0, 0xF8), alloc=SECTOR)
    assert res.good, res.describe()
    assert res.data == disc.raw(lba), f"LBA {lba}: READ CD differs from the BIN's sector"


def test_read_cd_of_form1_user_data(cell: CellEnv, raw_cd: tuple[RawDisc, DriveNode]) -> None:
    disc, node = raw_cd
    res = sg_raw(cell.guest, node.sg, _read_cd(disc.mode2_start + 1, 4, 0x10), alloc=2048)
    assert res.good, res.describe()
    assert res.data == disc.mode2_data[2048:4096]


def test_read_cd_refuses_the_wrong_sector_type(
    cell: CellEnv, raw_cd: tuple[RawDisc, DriveNode]
) -> None:
    """Mode 1 asked of an XA sector: CHECK CONDITION, ILLEGAL MODE FOR THIS TRACK (05/64/00)."""
    disc, node = raw_cd
    res = sg_raw(cell.guest, node.sg, _read_cd(disc.mode2_start, 2, 0x10), alloc=2048)
    assert res.status == "Check Condition" and res.sense is not None, res.describe()
    assert (res.sense.key, res.sense.asc) == (0x5, 0x64), res.describe()
