"""SPC: the commands every SCSI device answers, checked with sg3_utils in the guest.

Linux's scan reads INQUIRY (type, RMB, identity, version) and, for SPC-3
devices, the VPD pages; udev builds ID_SERIAL from page 0x80. A wrong byte
here shows as a missing or misnamed drive, not as an error.
"""

from __future__ import annotations

import re

import pytest
from scsi_helpers import expected_identity, parse_sense, sg_raw, tur

from lab.cell.drives import DriveNode
from lab.cell.env import CellEnv


def _field(text: str, *labels: str) -> str:
    """The value after the first of ``labels`` found (sg3-utils renamed some over time)."""
    for label in labels:
        match = re.search(rf"{re.escape(label)}:\s?(.*)$", text, re.MULTILINE)
        if match is not None:
            return match.group(1).rstrip()
    raise AssertionError(f"sg3-utils printed none of {labels!r}:\n{text}")


def test_inquiry_standard(cell: CellEnv, drive: DriveNode) -> None:
    """PDT 5 (sr binds only to 4/5), RMB=1 and the responder's own identity."""
    out = cell.guest.run(["sg_inq", drive.sg]).stdout
    # sg3-utils >= 1.46 prints PDT=5, bullseye's 1.45 Device_type=5
    assert re.search(r"\b(PDT|Device_type)=5\b", out), out
    assert re.search(r"\bRMB=1\b", out), out
    vendor, product, revision = expected_identity(cell)
    assert _field(out, "Vendor identification") == vendor
    assert _field(out, "Product identification") == product
    if revision is not None:
        assert _field(out, "Product revision level") == revision
    else:
        assert _field(out, "Product revision level"), "empty revision"


def test_inquiry_raw_bytes(cell: CellEnv, drive: DriveNode) -> None:
    """The 36 bytes the midlayer parses: type, RMB, version, additional length, padding."""
    res = sg_raw(cell.guest, drive.sg, "12 00 00 00 24 00", alloc=36)
    assert res.good, res.describe()
    data = res.data
    assert len(data) == 36, res.describe()
    assert data[0] == 0x05 and data[1] & 0x80
    assert data[2] >= 3, f"VERSION {data[2]}: Linux skips VPD pages below SPC-2"
    assert data[3] & 0x0F == 2, f"response data format {data[3] & 0x0F}, must be 2"
    assert data[4] >= 31, f"additional length {data[4]} < 31"
    vendor, product, _ = expected_identity(cell)
    assert data[8:16] == vendor.ljust(8).encode(), data[8:16]
    assert data[16:32] == product.ljust(16).encode(), data[16:32]


def test_vpd_supported_pages(cell: CellEnv, drive: DriveNode) -> None:
    """Page 0x00 lists itself; for our responder 0x80 and 0x83 too."""
    res = sg_raw(cell.guest, drive.sg, "12 01 00 00 ff 00", alloc=255)
    assert res.good, res.describe()
    data = res.data
    assert data[0] == 0x05 and data[1] == 0x00, res.describe()
    pages = list(data[4 : 4 + data[3]])
    assert pages and pages[0] == 0x00, pages
    assert pages == sorted(pages), f"pages not in ascending order: {pages}"
    if cell.spec.responder == "ours":
        assert {0x80, 0x83} <= set(pages), pages
    vpd = cell.guest.run(["sg_vpd", "-p", "0", drive.sg], check=False).stdout
    assert "Supported VPD pages" in vpd, vpd


def test_vpd_unit_serial(cell: CellEnv, drive: DriveNode) -> None:
    """Page 0x80: a non-empty serial, the one udev exports as ID_SCSI_SERIAL."""
    if 0x80 not in sg_raw(cell.guest, drive.sg, "12 01 00 00 ff 00", alloc=255).data[4:]:
        pytest.skip("drive does not list VPD page 0x80")
    out = cell.guest.run(["sg_vpd", "-p", "0x80", drive.sg]).stdout
    serial = _field(out, "Product serial number", "Unit serial number").strip()
    assert serial, out
    if cell.spec.responder == "ours":
        assert re.fullmatch(r"VL\d{6}", serial), serial
    udev = cell.guest.run(["udevadm", "info", "-q", "property", "-n", drive.sr]).stdout
    assert f"ID_SCSI_SERIAL={serial}" in udev, udev


def test_vpd_device_identification(cell: CellEnv, drive: DriveNode) -> None:
    """Page 0x83 carries at least one designator naming the addressed LU."""
    if 0x83 not in sg_raw(cell.guest, drive.sg, "12 01 00 00 ff 00", alloc=255).data[4:]:
        pytest.skip("drive does not list VPD page 0x83")
    res = sg_raw(cell.guest, drive.sg, "12 01 83 00 ff 00", alloc=255)
    assert res.good and res.data[1] == 0x83, res.describe()
    length = int.from_bytes(res.data[2:4], "big")
    assert length >= 4, res.describe()
    out = cell.guest.run(["sg_vpd", "-p", "0x83", drive.sg]).stdout
    assert "Addressed logical unit" in out and "designator type" in out, out
    vendor, _, _ = expected_identity(cell)
    if cell.spec.responder == "ours":
        assert f"vendor id: {vendor}" in out, out


def test_tur_on_loaded_drive_is_good(cell: CellEnv, drive: DriveNode) -> None:
    res = tur(cell.guest, drive.sg)
    if res.sense is not None and res.sense.key == 0x6:  # a leftover unit attention
        res = tur(cell.guest, drive.sg)
    assert res.status == "Good", res.describe()
    assert res.rc == 0 and res.sense is None, res.describe()


def test_request_sense_returns_the_last_error(cell: CellEnv, drive: DriveNode) -> None:
    """REQUEST SENSE right after a failed command reports that command's sense.

    Linux gets sense by autosense, but tools (and old initiators) still ask.
    The two sg_raw calls are separate guest commands, so the kernel's 2 s
    media poll may land between them: the drive must keep the sense until
    REQUEST SENSE fetches it, as real drives on a shared bus do.
    """
    failed = sg_raw(cell.guest, drive.sg, "ff 00 00 00 00 00")
    assert failed.status == "Check Condition" and failed.sense is not None, failed.describe()
    asked = sg_raw(cell.guest, drive.sg, "03 00 00 00 fc 00", alloc=252)
    assert asked.good, asked.describe()
    assert len(asked.data) >= 14, asked.describe()
    sense = parse_sense(asked.data)
    assert sense.triple == failed.sense.triple == "05/20/00", (
        f"REQUEST SENSE gave {sense.triple}, the failed command {failed.sense.triple}"
    )
    again = sg_raw(cell.guest, drive.sg, "03 00 00 00 fc 00", alloc=252)
    assert again.good and parse_sense(again.data).key == 0, (
        f"second REQUEST SENSE must report NO SENSE: {again.describe()}"
    )


def test_report_luns_lists_lun_0(cell: CellEnv, drive: DriveNode) -> None:
    out = cell.guest.run(["sg_luns", drive.sg], check=False)
    assert out.rc == 0, out.stderr
    # "imples" is how sg3-utils before 1.47 spelled it
    assert re.search(r"impl(ies|es) 1 lun entr", out.stdout), out.stdout
    assert re.search(r"^\s+0{16}\s*$", out.stdout, re.MULTILINE), out.stdout
