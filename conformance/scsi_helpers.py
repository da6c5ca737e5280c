"""Shared helpers for the conformance groups: sg_raw and its output, TOC and
GET CONFIGURATION parsing, udev properties, waiting on media, restoring the cell.

Every parser here works on what the real tools print in the guest (sg3_utils
1.48 in trixie), so a test asserts on bytes the drive actually returned, never
on an exit status alone (trixie's sg_turs exits 0 even when it failed).
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.build.media import MixedDisc, build_mixed_cd
from lab.cell.env import GUEST_MEDIA
from lab.cell.module import insert_module, module_loaded
from lab.errors import GuestWaitError
from lab.vm.guest import command_text

if TYPE_CHECKING:
    from lab.cell.drives import DriveNode
    from lab.cell.env import CellEnv
    from lab.vm.guest import Guest

CD1 = f"{GUEST_MEDIA}/cd1.iso"
MIXED_DIR = f"{GUEST_MEDIA}/mixed"  # the mixed CD of the CD audio groups
CD2 = f"{GUEST_MEDIA}/cd2.iso"
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010
# cdemu-daemon's INQUIRY identity (its revision follows the daemon's version).
CDEMU_IDENTITY = ("CDEmu", "CD-ROM", None)


# ------------------------------------------------------------------- sense
@dataclass(frozen=True)
class Sense:
    key: int
    asc: int
    ascq: int
    raw: bytes
    information: int | None = None  # only when VALID is set (fixed format)

    @property
    def triple(self) -> str:
        """``KK/AA/QQ`` in hex, the form the responder's trace uses."""
        return f"{self.key:02X}/{self.asc:02X}/{self.ascq:02X}"


def parse_sense(raw: bytes) -> Sense:
    """Decode fixed (0x70/0x71) or descriptor (0x72/0x73) format sense data."""
    if len(raw) < 3:
        raise ValueError(f"sense too short: {raw.hex()}")
    code = raw[0] & 0x7F
    if code in (0x72, 0x73):
        return Sense(raw[1] & 0x0F, raw[2], raw[3] if len(raw) > 3 else 0, raw)
    if code in (0x70, 0x71):
        if len(raw) < 14:
            raise ValueError(f"fixed sense too short: {raw.hex()}")
        info = int.from_bytes(raw[3:7], "big") if raw[0] & 0x80 else None
        return Sense(raw[2] & 0x0F, raw[12], raw[13], raw, info)
    raise ValueError(f"unknown sense response code {raw[0]:#04x}: {raw.hex()}")


_HEX_LINE = re.compile(r"^\s*(?:[0-9a-fA-F]{2}\s+)*[0-9a-fA-F]{2}\s*$")


def raw_sense_from_dump(text: str) -> bytes | None:
    """The bytes after sg3_utils' "Raw sense data (in hex)" line (printed with -v)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "Raw sense data" in line:
            out = bytearray()
            for follow in lines[i + 1 :]:
                if not _HEX_LINE.match(follow):
                    break
                out += bytes.fromhex("".join(follow.split()))
            return bytes(out)
    return None


# ------------------------------------------------------------------ sg_raw
@dataclass(frozen=True)
class RawResult:
    """One sg_raw run: exit code, SCSI status text, data-in, decoded sense."""

    cdb: str
    rc: int
    status: str | None  # "Good", "Check Condition", ... as sg_raw prints it
    data: bytes
    sense: Sense | None
    stderr: str

    @property
    def good(self) -> bool:
        return self.status == "Good" and self.rc == 0

    def describe(self) -> str:
        sense = self.sense.triple if self.sense else None
        return (
            f"sg_raw {self.cdb}: rc={self.rc} status={self.status!r} sense={sense} "
            f"data={self.data[:64].hex()}\n{self.stderr.strip()[-800:]}"
        )


def sg_raw(
    guest: Guest, dev: str, cdb: str | bytes, alloc: int = 0, timeout: float = 60.0
) -> RawResult:
    """Send ``cdb`` (hex string, spaces allowed, or bytes) with sg_raw -v to ``dev``."""
    cdb_bytes = cdb if isinstance(cdb, bytes) else bytes.fromhex(cdb.replace(" ", ""))
    words = " ".join(f"{b:02x}" for b in cdb_bytes)
    tmp = "/tmp/sgraw.$$.bin"  # unquoted: the guest's shell expands $$
    read = f"-r {alloc} -o {tmp}" if alloc else ""
    script = (
        f"rm -f {tmp}; sg_raw -v {read} {command_text([dev])} {words}; "
        f'echo "SGRAW_RC=$?" >&2; if [ -f {tmp} ]; then base64 -w0 {tmp}; rm -f {tmp}; fi'
    )
    res = guest.sh(script, timeout=timeout, check=False)
    rc_match = re.search(r"SGRAW_RC=(\d+)", res.stderr)
    status = re.search(r"SCSI Status:\s*(.+?)\s*$", res.stderr, re.MULTILINE)
    raw_sense = raw_sense_from_dump(res.stderr)
    return RawResult(
        cdb=words,
        rc=int(rc_match.group(1)) if rc_match else -1,
        status=status.group(1) if status else None,
        data=base64.b64decode(res.stdout.strip()) if res.stdout.strip() else b"",
        sense=parse_sense(raw_sense) if raw_sense else None,
        stderr=res.stderr,
    )


def tur(guest: Guest, dev: str) -> RawResult:
    """TEST UNIT READY through sg_raw (trixie's sg_turs is broken)."""
    return sg_raw(guest, dev, "00 00 00 00 00 00")


def tur_until_good(guest: Guest, dev: str, tries: int = 5) -> RawResult:
    """TUR until GOOD, eating the unit attentions a medium change leaves behind."""
    result = tur(guest, dev)
    for _ in range(tries - 1):
        if result.good:
            break
        time.sleep(0.5)
        result = tur(guest, dev)
    return result


# --------------------------------------------------------------- READ TOC
@dataclass(frozen=True)
class TocEntry:
    track: int
    adr_ctrl: int
    address: int  # LBA (MSF converted back to LBA when the TOC was read in MSF)

    @property
    def control(self) -> int:
        return self.adr_ctrl & 0x0F

    @property
    def is_data(self) -> bool:
        return bool(self.control & 0x04)


def msf_to_lba(m: int, s: int, f: int) -> int:
    return (m * 60 + s) * 75 + f - 150


def parse_toc(data: bytes, msf: bool) -> tuple[int, int, list[TocEntry]]:
    """READ TOC format 0/1: (first, last, entries), honouring the data length field."""
    if len(data) < 4:
        raise ValueError(f"TOC too short: {data.hex()}")
    length = int.from_bytes(data[0:2], "big") + 2
    body = data[4 : min(length, len(data))]
    entries = []
    for off in range(0, len(body) - 7, 8):
        d = body[off : off + 8]
        addr = msf_to_lba(d[5], d[6], d[7]) if msf else int.from_bytes(d[4:8], "big")
        entries.append(TocEntry(d[2], d[1], addr))
    return data[2], data[3], entries


# ------------------------------------------------------- GET CONFIGURATION
@dataclass(frozen=True)
class Config:
    current_profile: str  # as sg_get_config names it, e.g. "CD-ROM"
    features: dict[int, bool]  # feature code -> current bit
    profiles: dict[str, bool]  # profile name -> currentP
    text: str


def sg_get_config(guest: Guest, dev: str, *args: str) -> Config:
    """``sg_get_config *args dev``: each of ``args`` is one argv word (e.g. ``"--rt=1"``)."""
    res = guest.run(["sg_get_config", *args, dev], timeout=60, check=False)
    text = res.stdout + res.stderr
    current = re.search(r"^Current profile:\s*(.+?)\s*$", text, re.MULTILINE)
    features = {
        int(code, 16): flag == "1"
        for flag, code in re.findall(r"current=(\d)\s*\[(0x[0-9a-fA-F]+)\]", text)
    }
    profiles = {
        name.strip(): flag == "1"
        for name, flag in re.findall(r"profile:\s*(.+?)\s*,\s*currentP=(\d)", text)
    }
    if res.rc != 0 or current is None:
        raise AssertionError(f"sg_get_config {args} failed (rc {res.rc}):\n{text}")
    return Config(current.group(1), features, profiles, text)


# ------------------------------------------------------------ guest state
def udev_props(guest: Guest, sr: str) -> dict[str, str]:
    guest.settle()
    out = guest.run(["udevadm", "info", "-q", "property", "-n", sr], timeout=60, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def cdrom_props(guest: Guest, sr: str) -> dict[str, str]:
    return {k: v for k, v in udev_props(guest, sr).items() if k.startswith("ID_CDROM")}


def wait_props(guest: Guest, sr: str, want: dict[str, str | None], timeout: float = 15.0) -> dict:
    """Poll udev until every ``want`` key has its value (None: the key is absent);
    ``timeout`` times the guest's patience (a debug kernel's udev is slower)."""
    deadline = time.monotonic() + timeout * guest.patience
    while True:
        props = udev_props(guest, sr)
        if all(props.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
            return props
        time.sleep(1.0)


def size64(guest: Guest, sr: str) -> tuple[int | None, str]:
    """``blockdev --getsize64``: (bytes, "") or (None, the error text)."""
    res = guest.run(["blockdev", "--getsize64", sr], timeout=60, check=False)
    if res.rc == 0:
        return int(res.stdout.strip()), ""
    return None, res.stderr.strip()


def wait_size(guest: Guest, sr: str, size: int, timeout: float = 20.0) -> int | None:
    """Poll until the block device opens with ``size`` bytes; return the last size seen."""
    deadline = time.monotonic() + timeout * guest.patience
    while True:
        out = guest.run(["blockdev", "--getsize64", sr], check=False).stdout.strip()
        seen = int(out) if out.isdigit() else None
        if seen == size or time.monotonic() > deadline:
            return seen
        time.sleep(0.25)


def sha256_in_guest(guest: Guest, path: str, timeout: float = 600.0) -> str:
    res = guest.run(["sha256sum", path], timeout=timeout)
    return res.stdout.split()[0]


def expected_identity(cell: CellEnv) -> tuple[str, str, str | None]:
    """(vendor, product, revision) the cell's responder puts in INQUIRY."""
    if cell.spec.responder == "ours":
        from vhba_responder.device import Identity

        ident = Identity()
        return ident.vendor, ident.product, ident.revision
    return CDEMU_IDENTITY


def insert(
    cell: CellEnv, path: str, size: int | None = None, node: DriveNode | None = None
) -> None:
    """The user unlocks drive 0 and swaps its disc for ``path``; wait until Linux sees its size.

    udev locks every disc it sees (``cdrom_id --lock-media``), and a locked
    drive takes a new disc only through an eject request that Linux answers at
    its next media poll: 2.2 s a swap under TCG, against 0.3 s unlocked.
    ``eject -i off`` unlocks as a user would; the request path itself is
    tested where the drive is emptied while locked
    (media/test_removed_disc_gives_enomedium).  ``node``: drive 0's node, when
    not ``cell.nodes[0]``.
    """
    assert cell.drive is not None
    target = node or cell.nodes[0]
    # udev's probes of the last drive or disc hold it open, its door locked
    cell.guest.settle()
    cell.guest.run(["eject", "-i", "off", target.sr], check=False)
    cell.drive.load(0, path)
    if size is not None:
        seen = wait_size(cell.guest, target.sr, size)
        assert seen == size, f"after loading {path} {target.sr} has size {seen}, expected {size}"
        cell.guest.settle()


def upload_sheet(cell: CellEnv, files: tuple[Path, ...], guest_dir: str) -> str:
    """A CUE sheet (first of ``files``) and its BIN files in ``guest_dir``, uploaded once."""
    cue = f"{guest_dir}/{files[0].name}"
    if cell.guest.run(["test", "-f", cue], check=False).rc != 0:
        cell.guest.run(["mkdir", "-p", "-m", "755", guest_dir])
        for path in files:
            cell.guest.upload(path, f"{guest_dir}/{path.name}", mode=0o644)
    return cue


def upload_mixed_cd(cell: CellEnv) -> tuple[MixedDisc, str]:
    """The mixed CD (CUE/BIN) built for the cell and uploaded once; (disc, its sheet's path)."""
    disc = build_mixed_cd(cell.cell_dir / "mixed-cd", seed=18)
    return disc, upload_sheet(cell, disc.files, MIXED_DIR)


def restore_cd1(cell: CellEnv) -> None:
    """Back to the cell's normal state: drive 0 unlocked, cd1 loaded and visible."""
    if not cell.nodes or cell.drive is None:
        return
    sr = cell.nodes[0].sr
    cell.guest.sh(
        f"{command_text(['umount', sr])} 2>/dev/null; "
        f"{command_text(['eject', '-i', 'off', sr])} >/dev/null 2>&1",
        timeout=60,
        check=False,
    )
    sg = cell.nodes[0].sg
    sg_raw(cell.guest, sg, "1e 00 00 00 00 00")  # ALLOW MEDIUM REMOVAL
    insert(cell, CD1, cell.media["cd1"].size)


def our_responder_only(cell: CellEnv, why: str) -> None:
    import pytest

    if cell.spec.responder != "ours":
        pytest.skip(f"{why} needs our responder (cell uses {cell.spec.responder})")


def mounted_checksums(
    guest: Guest, sr: str, fstype: str, paths: list[str], timeout: float = 600.0
) -> dict[str, str]:
    """Mount ``sr`` read-only, sha256 ``paths`` (relative to the root), unmount."""
    mnt = f"/mnt/conf-{sr.rsplit('/', 1)[1]}"
    mount = command_text(["mount", "-t", fstype, "-o", "ro", sr, mnt])
    sha256sum = command_text(["sha256sum", *("." + p for p in paths)])
    res = guest.sh(
        f"{command_text(['mkdir', '-p', mnt])} && {mount} || exit 90; "
        f"(cd {command_text([mnt])} && {sha256sum}); rc=$?; "
        f"{command_text(['umount', mnt])} || rc=91; exit $rc",
        timeout=timeout,
        check=False,
    )
    if res.rc == 90:
        raise AssertionError(f"mount -t {fstype} {sr} failed: {res.stderr.strip()}")
    if res.rc == 91:
        raise AssertionError(f"umount {mnt} failed: {res.stderr.strip()}")
    got = {}
    for line in res.stdout.splitlines():
        digest, _, name = line.partition("  ")
        got[name.removeprefix(".")] = digest
    return got


def checksum_mismatches(expected: dict[str, str], got: dict[str, str]) -> list[str]:
    return [
        f"{path}: {got.get(path, 'missing')} != {digest}"
        for path, digest in sorted(expected.items())
        if got.get(path) != digest
    ]


def rmmod_eventually(guest: Guest, seconds: int = 20) -> tuple[int, str]:
    """rmmod vhba, retried: SCSI devices go away asynchronously after their fd closes.

    (0, "") once it is out; (1, what the last try said) after ``seconds``.
    """
    try:
        guest.wait_for(["rmmod", "vhba"], timeout=seconds, interval=0.5)
    except GuestWaitError as exc:
        return 1, str(exc).strip()
    return 0, ""


def wait_gone(guest: Guest, hctl: str, seconds: int = 20) -> bool:
    """Whether the SCSI device ``hctl`` leaves sysfs within ``seconds``."""
    try:
        guest.wait_for(["test", "-e", f"/sys/bus/scsi/devices/{hctl}"], timeout=seconds,
                       until_fails=True)  # fmt: skip
    except GuestWaitError:
        return False
    return True


def restart_drive(
    cell: CellEnv,
    media: list[str | None] | None = None,
    trace: bool = False,
    timeout: float = 30.0,
) -> None:
    """Stop whatever serves the cell, reload vhba if needed, serve ``media`` (default cd1).

    ``cell.nodes`` is updated, so the ``drive`` fixture of later tests follows;
    it is empty until the new drive is up, so a restart that fails leaves no
    stale nodes for them (the fixture then restarts the drive itself).
    ``trace=True`` has our responder record every command (and so answer every
    READ).  ``timeout``: for the drive to come up (scaled by the guest's patience).
    """
    assert cell.drive is not None
    cell.nodes = []
    cell.drive.stop()
    if not module_loaded(cell.guest):
        insert_module(cell.guest)
    traced = {"trace": True} if trace else {}
    cell.nodes = cell.drive.start(
        media or [CD1], faults=cell.faults or None, timeout=timeout, **traced
    )
    cell.guest.settle()
