"""Test media: deterministic ISO9660 images built on the host with pycdlib.

File contents come from a seeded generator, so the same seed always makes
the same image and the expected sha256 of every file is known up front: a
checksum mismatch in the guest is a data-path bug, never test flakiness.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pycdlib

from lab.digest import sha256_file


@dataclass(frozen=True)
class Medium:
    path: Path
    label: str
    files: dict[str, str]  # ISO path (e.g. "/DIR/FILE.BIN") -> sha256

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)

    @classmethod
    def load(cls, path: Path) -> Medium | None:
        """The medium ``build_iso`` wrote at ``path``, or None if it is not (fully) there."""
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        if not path.exists():
            return None
        return cls(path, meta["label"], meta["files"])


# name -> size; sizes straddle sector (2048) and command (128 KiB) boundaries on purpose.
DEFAULT_LAYOUT = {
    "/EMPTY.TXT": 0,
    "/SMALL.TXT": 1,
    "/SECTOR.BIN": 2048,
    "/ODD.BIN": 2048 * 3 + 17,
    "/CMD.BIN": 128 * 1024 + 1,
    "/DATA/BIG.BIN": 3 * 1024 * 1024 + 4096 + 5,
    "/DATA/NESTED/DEEP.BIN": 70_000,
}


def build_iso(out: Path, label: str, seed: int, layout: dict[str, int] | None = None) -> Medium:
    """Write an ISO9660 (Joliet + Rock Ridge) image with seeded file contents."""
    layout = layout if layout is not None else DEFAULT_LAYOUT
    rng = random.Random(seed)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    made_dirs: set[str] = set()
    files: dict[str, str] = {}
    for path, size in layout.items():
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/" + "/".join(parts[:depth])
            if directory not in made_dirs:
                iso.add_directory(
                    directory, rr_name=parts[depth - 1].lower(), joliet_path=directory.lower()
                )
                made_dirs.add(directory)
        data = rng.randbytes(size) if size else b""
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"{path};1",
            rr_name=parts[-1].lower(),
            joliet_path=path.lower(),
        )
        files[path.lower()] = hashlib.sha256(data).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    # The image's volume dates are the build time, so a rebuild differs in its
    # first 64 KiB: write the manifest, then move the finished image into place,
    # so a reader never sees a half-written or swapped image.
    out.with_suffix(".json").write_text(json.dumps({"label": label, "files": files}, indent=2))
    partial = out.with_name(out.name + ".partial")
    iso.write(str(partial))
    iso.close()
    os.replace(partial, out)
    return Medium(out, label, files)
