"""Differential: our responder against cdemu-daemon, both serving the same CUE/BIN.

Both drives sit in the same guest on the cell's module: the cell's own drive
and the other one started next to it (cdemu-daemon beside our responder, or
our responder beside cdemu-daemon).  Each test asks both the same MMC
questions about the mixed CD of the CD audio group and compares the answers
field by field, so a difference names the field (``track_info[3].track_size``)
and both values.  Differences that are cdemu-daemon's choice, not a bug of
ours, are listed with their reason in conformance/known-failures.toml.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from scsi_helpers import insert, restart_drive, restore_cd1, sg_raw, upload_mixed_cd

from lab.build.media import MixedDisc
from lab.cell.drives import CdemuDaemon, Drive, DriveNode, OurResponder
from lab.cell.env import CellEnv
from lab.vm.guest import Guest

# A second stack beside the cell's drive costs ~25 s to start: outside --quick.
pytestmark = pytest.mark.slow
SECTOR = 2352
CDEMU_DAEMON = "/usr/bin/cdemu-daemon"
Fields = dict[str, object]


@dataclass(frozen=True)
class Pair:
    """The mixed CD in both drives: the guest, the disc, each drive's node."""

    guest: Guest
    disc: MixedDisc
    ours: DriveNode
    cdemu: DriveNode


@pytest.fixture(scope="module")
def pair(cell: CellEnv) -> Iterator[Pair]:
    """The cell's drive and the other kind next to it, the mixed CD in both."""
    if cell.broken:
        pytest.skip(f"cell broken: {cell.broken}")
    assert cell.drive is not None
    if cell.guest.run(["test", "-x", CDEMU_DAEMON], check=False).rc != 0:
        pytest.skip("this release's guest image has no cdemu-daemon (guest-images/*.packages)")
    if not cell.drive.running():  # an earlier group (the attacker's) may have stopped it
        restart_drive(cell)
    disc, cue = upload_mixed_cd(cell)
    insert(cell, cue, size=disc.leadout * 2048)
    other: Drive = (
        CdemuDaemon(cell.guest) if cell.spec.responder == "ours" else OurResponder(cell.guest)
    )
    try:
        other.ship()
        (node,) = other.start([cue], timeout=60)
        mine = cell.nodes[0]
        ours, cdemu = (mine, node) if cell.spec.responder == "ours" else (node, mine)
        yield Pair(cell.guest, disc, ours, cdemu)
    finally:
        other.stop()
        restore_cd1(cell)


def _read(guest: Guest, node: DriveNode, cdb: str, alloc: int) -> bytes:
    res = sg_raw(guest, node.sg, cdb, alloc=alloc)
    assert res.good, f"{node.sg}: {cdb}: {res.describe()}"
    return res.data


def _toc(msf: bool, fmt: int) -> Callable[[Guest, DriveNode, MixedDisc], Fields]:
    def view(guest: Guest, node: DriveNode, disc: MixedDisc) -> Fields:
        cdb = f"43 {2 if msf else 0:02x} {fmt:02x} 00 00 00 {1 if fmt == 2 else 0:02x} 03 24 00"
        data = _read(guest, node, cdb, 0x324)
        end = 2 + int.from_bytes(data[0:2], "big")
        fields: Fields = {"first": data[2], "last": data[3]}
        size = 11 if fmt == 2 else 8
        for at in range(4, min(end, len(data)) - size + 1, size):
            d = data[at : at + size]
            if fmt == 2:
                key = f"point_{d[3]:02x}"
                fields[f"{key}.session"] = d[0]
                fields[f"{key}.adr_ctrl"] = f"{d[1]:02x}"
                fields[f"{key}.atime"] = tuple(d[4:7])
                fields[f"{key}.ptime"] = tuple(d[8:11])
            else:
                key = f"track_{d[2]:02x}"
                fields[f"{key}.adr_ctrl"] = f"{d[1]:02x}"
                fields[f"{key}.address"] = tuple(d[5:8]) if msf else int.from_bytes(d[4:8], "big")
        return fields

    return view


def _disc_info(guest: Guest, node: DriveNode, disc: MixedDisc) -> Fields:
    d = _read(guest, node, "51 00 00 00 00 00 00 00 22 00", 0x22)
    return {
        "erasable": bool(d[2] & 0x10), "last_session_state": d[2] >> 2 & 3,
        "disc_status": d[2] & 3, "first_track": d[3], "sessions": d[4] | d[9] << 8,
        "first_track_last_session": d[5] | d[10] << 8,
        "last_track_last_session": d[6] | d[11] << 8,
        "did_v_dbc_v_uru": f"{d[7] & 0xE0:02x}", "disc_type": f"{d[8]:02x}",
        "lead_in_start": tuple(d[17:20]), "last_lead_out": tuple(d[21:24]),
    }  # fmt: skip


def _track_info(guest: Guest, node: DriveNode, disc: MixedDisc) -> Fields:
    fields: Fields = {}
    for track in disc.tracks:
        d = _read(guest, node, f"52 01 00 00 00 {track.number:02x} 00 00 24 00", 0x24)
        key = f"track_info[{track.number}]"
        fields.update({
            f"{key}.track": d[2] | d[32] << 8, f"{key}.session": d[3] | d[33] << 8,
            f"{key}.damage_copy_mode": f"{d[5]:02x}", f"{key}.rt_blank_data_mode": f"{d[6]:02x}",
            f"{key}.start": int.from_bytes(d[8:12], "big"),
            f"{key}.track_size": int.from_bytes(d[24:28], "big"),
        })  # fmt: skip
    return fields


def _sample_lbas(disc: MixedDisc) -> list[int]:
    """Data sectors, each audio track's first and neighbours, both pregaps, the last sector."""
    audio = [t for t in disc.tracks if t.audio]
    lbas = {16, 17, audio[0].start - 150, disc.leadout - 1}
    lbas.update(lba for t in audio for lba in (t.start - 1, t.start, t.start + 1))
    return sorted(lbas)


def _read_cd(guest: Guest, node: DriveNode, disc: MixedDisc) -> Fields:
    """Every field of sample sectors (READ CD: all headers, user data, EDC/ECC; Q sub-channel)."""
    fields: Fields = {}
    data_end = disc.track(2).start - 150
    for lba in _sample_lbas(disc):
        flags = 0xF8 if lba < data_end else 0x10  # data: sync..EDC/ECC; audio: the samples
        cdb = f"be 00 {lba:08x} 00 00 01 {flags:02x} 02 00"
        d = _read(guest, node, cdb, SECTOR + 16)
        raw, q = d[:SECTOR], d[SECTOR:]
        key = f"lba_{lba}"
        if lba < data_end:
            fields.update({
                f"{key}.sync": raw[0:12].hex(), f"{key}.header": raw[12:16].hex(),
                f"{key}.user_sha256": hashlib.sha256(raw[16:2064]).hexdigest()[:16],
                f"{key}.edc": raw[2064:2068].hex(), f"{key}.zero": raw[2068:2076].hex(),
                f"{key}.ecc_sha256": hashlib.sha256(raw[2076:SECTOR]).hexdigest()[:16],
            })  # fmt: skip
        else:
            fields[f"{key}.samples_sha256"] = hashlib.sha256(raw).hexdigest()[:16]
        fields.update({
            f"{key}.q.adr_ctrl": f"{q[0]:02x}", f"{key}.q.track": f"{q[1]:02x}",
            f"{key}.q.index": f"{q[2]:02x}", f"{key}.q.relative": q[3:6].hex(),
            f"{key}.q.absolute": q[7:10].hex(),
        })  # fmt: skip
    return fields


def _features(guest: Guest, node: DriveNode, disc: MixedDisc) -> Fields:
    """GET CONFIGURATION: the current profile, CD Read (0x1E), CD audio play (0x103)."""
    fields: Fields = {}
    for code in (0x001E, 0x0103):
        d = _read(guest, node, f"46 02 {code:04x} 00 00 00 00 40 00", 0x40)
        fields["current_profile"] = f"{int.from_bytes(d[6:8], 'big'):04x}"
        have = len(d) >= 12 and int.from_bytes(d[8:10], "big") == code
        key = f"feature_{code:04x}"
        fields[f"{key}.present"] = have
        if have:
            fields[f"{key}.version_current"] = f"{d[10]:02x}"
            fields[f"{key}.data"] = d[12 : 12 + d[11]].hex()
    return fields


VIEWS = {
    "toc_lba": _toc(False, 0), "toc_msf": _toc(True, 0), "session": _toc(False, 1),
    "full_toc": _toc(True, 2), "disc_info": _disc_info, "track_info": _track_info,
    "read_cd": _read_cd, "features": _features,
}  # fmt: skip


@pytest.mark.parametrize("view", list(VIEWS))
def test_same_answers_as_cdemu_daemon(pair: Pair, view: str) -> None:
    ask = VIEWS[view]
    ours, cdemu = ask(pair.guest, pair.ours, pair.disc), ask(pair.guest, pair.cdemu, pair.disc)
    differing = [
        f"{key}: ours={ours.get(key, '-')!r} cdemu={cdemu.get(key, '-')!r}"
        for key in sorted(set(ours) | set(cdemu))
        if ours.get(key, "-") != cdemu.get(key, "-")
    ]
    assert not differing, f"{view} differs from cdemu-daemon's:\n" + "\n".join(differing)
