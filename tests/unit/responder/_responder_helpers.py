"""Helpers shared by the responder tests (unique module name: the tests
directory is not a package, so a generic name could collide with other suites)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from vhba_responder.device import Device, Response
from vhba_responder.sense import DecodedSense, decode_fixed

FILES = {
    "/README.TXT;1": b"vhba-lab responder test image\n" * 50,
    "/DATA.BIN;1": bytes(range(256)) * 64 * 5,  # 80 KiB, spans many sectors
}


@dataclass
class IsoImage:
    path: Path
    data: bytes
    extents: dict[str, int]  # ISO path -> first LBA of the file's data

    @property
    def blocks(self) -> int:
        return len(self.data) // 2048


def build_iso(path: Path, files: dict[str, bytes]) -> IsoImage:
    """A real ISO9660 image written by pycdlib, with each file's extent recorded."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="VHBATEST")
    for name, content in files.items():
        iso.add_fp(io.BytesIO(content), len(content), name)
    iso.write(str(path))
    extents = {name: iso.get_record(iso_path=name).extent_location() for name in files}
    iso.close()
    return IsoImage(path, path.read_bytes(), extents)


def run(dev: Device, *cdb: int, data_out: bytes = b"", alloc: int | None = None) -> Response:
    return dev.execute(bytes(cdb), data_out, alloc)


def ok(dev: Device, *cdb: int, **kw) -> bytes:
    resp = run(dev, *cdb, **kw)
    assert resp.status == 0, f"{resp.name} failed: {resp.sense_text}"
    assert resp.sense == b""
    return resp.data


def check(dev: Device, *cdb: int, **kw) -> DecodedSense:
    """Run a CDB that must fail; return the decoded fixed-format sense."""
    resp = run(dev, *cdb, **kw)
    assert resp.status == 2, f"{resp.name} unexpectedly succeeded"
    assert resp.data == b""
    assert len(resp.sense) == 18 and resp.sense[0] & 0x7F == 0x70 and resp.sense[7] == 10
    return decode_fixed(resp.sense)


def be(b: bytes) -> int:
    return int.from_bytes(b, "big")
