"""Filesystems on the virtual drive: ISO9660 (Rock Ridge) from cd1, and a
DVD-sized UDF image with a file larger than 1 GiB built in the guest.

A mount exercises the open path (TOC, GET CONFIGURATION, lock) and the
filesystem's scattered reads; the big UDF file crosses the 2^31-byte and
32-bit-block-offset boundaries and makes the drive a DVD-ROM.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from scsi_helpers import (
    PROFILE_DVD_ROM,
    checksum_mismatches,
    insert,
    mounted_checksums,
    restore_cd1,
    sg_get_config,
    sg_raw,
)

from lab.cell.drives import DriveNode
from lab.cell.env import GUEST_MEDIA, CellEnv
from lab.vm.guest import command_text

UDF_IMAGE = f"{GUEST_MEDIA}/dvd-udf.iso"
UDF_IMAGE_MIB = 1200  # > 737,280,000 bytes: the responder presents it as DVD-ROM
BIG_FILE_BYTES = 1100 * 1024 * 1024 + 4097  # > 1 GiB, not a multiple of 2048
BIGFILE = Path(__file__).resolve().parent / "guest" / "bigfile.py"
GUEST_BIGFILE = "/usr/local/lib/vhba-bigfile.py"
GUEST_POOL = "/tmp/vhba-udf-pool.bin"


def test_iso9660_rock_ridge_files_match(cell: CellEnv, drive: DriveNode) -> None:
    medium = cell.media["cd1"]
    got = mounted_checksums(cell.guest, drive.sr, "iso9660", list(medium.files))
    assert not checksum_mismatches(medium.files, got), checksum_mismatches(medium.files, got)


def test_iso9660_listing_uses_rock_ridge_names(cell: CellEnv, drive: DriveNode) -> None:
    mnt = "/mnt/conf-ls"
    res = cell.guest.sh(
        f"{command_text(['mkdir', '-p', mnt])} && "
        f"{command_text(['mount', '-t', 'iso9660', '-o', 'ro', drive.sr, mnt])} && "
        f"(cd {command_text([mnt])} && find . -type f | sort); {command_text(['umount', mnt])}"
    )
    listed = {line.removeprefix(".") for line in res.stdout.split()}
    assert listed == set(cell.media["cd1"].files), listed


def test_mount_leaves_no_stale_mount(cell: CellEnv, drive: DriveNode) -> None:
    mounts = cell.guest.run(["cat", "/proc/mounts"]).stdout
    assert drive.sr not in mounts, mounts


@pytest.fixture(scope="module")
def udf_image(cell: CellEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Build the UDF image once per cell: (guest path of the big file, its sha256).

    The big file is written through a loop mount from a random pool
    (``guest/bigfile.py``); its checksum is computed on the host from the same
    pool, so the expected value never depends on the drive or the guest.
    """
    if cell.broken:
        pytest.skip(f"cell broken: {cell.broken}")
    pool = tmp_path_factory.mktemp("udf") / "pool.bin"
    host = [sys.executable, str(BIGFILE)]
    subprocess.run([*host, "pool", str(pool)], check=True)
    digest = subprocess.run(
        [*host, "sha256", str(pool), str(BIG_FILE_BYTES)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cell.guest.upload(BIGFILE, GUEST_BIGFILE, mode=0o644)
    cell.guest.upload(pool, GUEST_POOL, mode=0o644)
    mnt = "/mnt/conf-udf-build"
    label = "--label=VHBALAB_DVD"
    script = "; ".join((
        "set -e",
        command_text(["rm", "-f", UDF_IMAGE]),
        command_text(["truncate", "-s", f"{UDF_IMAGE_MIB}M", UDF_IMAGE]),
        f"{command_text(['mkudffs', '--media-type=hd', '--blocksize=2048', label, UDF_IMAGE])}"
        " >/dev/null",
        command_text(["mkdir", "-p", mnt]),
        command_text(["mount", "-t", "udf", "-o", "loop", UDF_IMAGE, mnt]),
        command_text(["mkdir", "-p", f"{mnt}/big"]),
        command_text(["python3", GUEST_BIGFILE, "write", GUEST_POOL, str(BIG_FILE_BYTES),
                      f"{mnt}/big/random.bin"]),
        f"printf 'hello udf\\n' > {command_text([f'{mnt}/hello.txt'])}",
        command_text(["umount", mnt]),
        command_text(["rm", "-f", GUEST_POOL]),
        "sync",
    ))  # fmt: skip
    res = cell.guest.sh(script, timeout=1800, check=False)
    if res.rc != 0:
        cleanup = f"{command_text(['umount', mnt])}; {command_text(['rm', '-f', UDF_IMAGE])}"
        cell.guest.sh(cleanup, check=False)
        raise AssertionError(f"building the UDF image in the guest failed: {res.stderr}")
    yield "/big/random.bin", digest
    cell.guest.run(["rm", "-f", UDF_IMAGE], check=False)


@pytest.fixture(scope="module")
def dvd_loaded(cell: CellEnv, udf_image: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """The DVD in drive 0 for the module's last tests (one disc change each way, ~20 s)."""
    size = UDF_IMAGE_MIB * 1024 * 1024
    try:
        insert(cell, UDF_IMAGE, size)
        yield udf_image
    finally:
        restore_cd1(cell)


@pytest.mark.slow
def test_dvd_udf_big_file_matches(
    cell: CellEnv, drive: DriveNode, dvd_loaded: tuple[str, str]
) -> None:
    path, digest = dvd_loaded
    expected = {path: digest, "/hello.txt": _sha256(b"hello udf\n")}
    got = mounted_checksums(cell.guest, drive.sr, "udf", list(expected), timeout=1800)
    assert not checksum_mismatches(expected, got), checksum_mismatches(expected, got)


@pytest.mark.slow
def test_dvd_current_profile_is_dvd_rom(
    cell: CellEnv, drive: DriveNode, dvd_loaded: tuple[str, str]
) -> None:
    config = sg_get_config(cell.guest, drive.sg)
    assert config.current_profile == "DVD-ROM", config.text
    res = sg_raw(cell.guest, drive.sg, "46 00 00 00 00 00 00 00 08 00", alloc=8)
    assert int.from_bytes(res.data[6:8], "big") == PROFILE_DVD_ROM, res.describe()
    info = command_text(["udevadm", "info", "-q", "property", "-n", drive.sr])
    props = cell.guest.sh(f"udevadm settle; {info}").stdout
    assert "ID_CDROM_MEDIA_DVD=1" in props, props
    assert "ID_FS_TYPE=udf" in props, props


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
