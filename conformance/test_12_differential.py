"""Differential: our drive against QEMU's own scsi-cd holding the same ISO.

Both sit in the same guest under the same kernel, so any difference in what
Linux derives (size, udev properties, TOC, profile, file contents) points at
the virtual drive or vhba, without a hand-written expectation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from scsi_helpers import (
    cdrom_props,
    mounted_checksums,
    parse_toc,
    sg_get_config,
    sg_raw,
    wait_size,
)

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv


@pytest.fixture
def reference(cell: CellEnv, drive: DriveNode) -> Iterator[DriveNode]:
    """QEMU's scsi-cd (vendor QEMU) with cd1 inserted; ejected afterwards."""
    assert cell.booted is not None
    out = cell.guest.run(["lsscsi", "-g"]).stdout
    line = next((ln for ln in out.splitlines() if re.search(r"\bQEMU\s+QEMU CD-ROM", ln)), None)
    assert line is not None, f"no QEMU reference scsi-cd in lsscsi:\n{out}"
    hctl = line.split("]")[0].lstrip("[")
    sr, sg = line.split()[-2:]
    machine = cell.booted.machine
    machine.change_medium(cell.media["cd1"].path)
    try:
        seen = wait_size(cell.guest, sr, cell.media["cd1"].size, timeout=30)
        assert seen == cell.media["cd1"].size, f"reference {sr} size {seen} after insert"
        cell.guest.settle()
        yield DriveNode(hctl, sr, sg)
    finally:
        machine.change_medium(None)


def _facts(cell: CellEnv, node: DriveNode) -> dict[str, object]:
    g = cell.guest
    facts: dict[str, object] = {}
    readcap = g.run(["sg_readcap", node.sg], check=False).stdout
    last = re.search(r"Last LBA=(\d+)", readcap)
    length = re.search(r"Logical block length=(\d+)", readcap)
    facts["readcap.last_lba"] = int(last.group(1)) if last else None
    facts["readcap.block_length"] = int(length.group(1)) if length else None
    blockdev = ["blockdev", "--getsize64", "--getss", "--getro", node.sr]
    bd = g.run(blockdev, check=False).stdout.split()
    facts["blockdev.size64"], facts["blockdev.ss"], facts["blockdev.ro"] = (bd + [None] * 3)[:3]
    props = cdrom_props(g, node.sr)
    for key in sorted(props):
        if key == "ID_CDROM" or key.startswith("ID_CDROM_MEDIA"):
            facts[f"udev.{key}"] = props[key]
    facts["udev.ID_CDROM_MEDIA_keys"] = sorted(k for k in props if k.startswith("ID_CDROM_MEDIA"))
    toc = sg_raw(g, node.sg, "43 00 00 00 00 00 01 03 24 00", alloc=0x324)
    if toc.good:
        first, last_track, entries = parse_toc(toc.data, msf=False)
        facts["toc.first_last"] = (first, last_track)
        facts["toc.data_tracks"] = [
            (e.track, e.control, e.address) for e in entries if e.track != 0xAA
        ]
    else:
        facts["toc"] = toc.sense.triple if toc.sense else toc.status
    facts["config.current_profile"] = sg_get_config(g, node.sg).current_profile
    facts["files"] = mounted_checksums(g, node.sr, "iso9660", list(cell.media["cd1"].files))
    return facts


def test_same_view_as_qemu_scsi_cd(cell: CellEnv, drive: DriveNode, reference: DriveNode) -> None:
    ours = _facts(cell, drive)
    qemu = _facts(cell, reference)
    differing = [
        f"{key}: ours={ours.get(key)!r} qemu={qemu.get(key)!r}"
        for key in sorted(set(ours) | set(qemu))
        if ours.get(key) != qemu.get(key)
    ]
    assert not differing, "differs from QEMU scsi-cd:\n" + "\n".join(differing)
    assert ours["files"] and all(ours["files"].values()), ours["files"]
