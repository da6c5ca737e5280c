"""Block layer view of the disc: size, sector size, read-only, and every byte.

Linux sizes the disc from READ CAPACITY and the last track's end; a drive
that reports the wrong last LBA shows here as a short or long device, and a
data-path bug (wrong offset, short transfer) as a checksum mismatch.
"""

from __future__ import annotations

from lab.cell.drives import DriveNode
from lab.cell.env import GUEST_MEDIA, CellEnv
from lab.vm.guest import command_text


def _blockdev(cell: CellEnv, drive: DriveNode, flag: str) -> str:
    return cell.guest.run(["blockdev", flag, drive.sr]).stdout.strip()


def test_size_is_the_iso_size(cell: CellEnv, drive: DriveNode) -> None:
    assert int(_blockdev(cell, drive, "--getsize64")) == cell.media["cd1"].size


def test_logical_sector_size_is_2048(cell: CellEnv, drive: DriveNode) -> None:
    assert _blockdev(cell, drive, "--getss") == "2048"


def test_device_refuses_writes(cell: CellEnv, drive: DriveNode) -> None:
    """A CD-ROM takes no writes, whichever way the kernel says no.

    Through 6.12 sr marks a drive read-only when page 2A lists no write
    capability (blockdev --getro 1); by 6.16 the flag stays 0, for QEMU's
    scsi-cd too, and the refusal comes at open or as a failed WRITE.  The
    flag itself is compared with QEMU's drive in differential/.
    """
    res = cell.guest.run(
        ["dd", "if=/dev/zero", f"of={drive.sr}", "bs=2048", "count=1", "oflag=direct",
         "conv=notrunc,nocreat"],
        timeout=60,
        check=False,
    )  # fmt: skip
    assert res.rc != 0, f"writing to {drive.sr} succeeded: {res.stderr}"


def test_sysfs_size_in_512_byte_sectors(cell: CellEnv, drive: DriveNode) -> None:
    name = drive.sr.rsplit("/", 1)[1]
    sectors = cell.guest.run(["cat", f"/sys/block/{name}/size"]).stdout.strip()
    assert int(sectors) * 512 == cell.media["cd1"].size


def test_read_capacity(cell: CellEnv, drive: DriveNode) -> None:
    out = cell.guest.run(["sg_readcap", drive.sg]).stdout
    blocks = cell.media["cd1"].size // 2048
    assert f"Last LBA={blocks - 1} " in out, out
    assert "Logical block length=2048 bytes" in out, out


def test_whole_device_sha256_matches_iso(cell: CellEnv, drive: DriveNode) -> None:
    """Every block, read through sr with buffered and direct I/O, is the ISO's."""
    expected = cell.media["cd1"].sha256
    for flags in ("", "iflag=direct"):
        dd = command_text(["dd", f"if={drive.sr}", "bs=64k", *flags.split(), "status=none"])
        out = cell.guest.sh(f"{dd} | sha256sum", timeout=600).stdout.split()[0]
        assert out == expected, f"dd {flags or 'buffered'}: sha256 {out} != ISO {expected}"


def test_unaligned_multi_command_read(cell: CellEnv, drive: DriveNode) -> None:
    """A 300 KiB direct read at an odd block spans several 128 KiB vhba commands."""
    iso = f"{GUEST_MEDIA}/cd1.iso"
    span = ["bs=2048", "skip=17", "count=150"]
    from_sr = command_text(["dd", f"if={drive.sr}", *span, "iflag=direct", "status=none"])
    from_iso = command_text(["dd", f"if={iso}", *span, "status=none"])
    got = cell.guest.sh(
        f"{from_sr} | sha256sum; {from_iso} | sha256sum", timeout=300
    ).stdout.split()
    assert got[0] == got[2], f"sr {got[0]} != image {got[2]}"
