"""Host-side assets for the data-path benchmark, built natively in the image's tree.

* The benchmark ISO: random files from the host's /dev/urandom, mastered with
  the guest's own xorriso by ``chroot`` into the image tree (native speed;
  the host has no xorriso).  Cached under ``<cache>/bench/`` by size.  It gets
  into the guest through QEMU's reference scsi-cd (a few seconds), not by scp
  (~7 MB/s under TCG), and the guest checks its sha256.
* ``sglat``: a tiny static C program that times one SCSI command N times with
  SG_IO (bench/sglat.c), compiled with the image's gcc by chroot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from bench.stats import iso_layout
from lab.build.images import Image
from lab.catalogue.digest import sha256_file
from lab.paths import cache_root

BENCH_CACHE = cache_root() / "bench"
SGLAT_SOURCE = Path(__file__).with_name("sglat.c")
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def _scratch(image: Image, prefix: str) -> tuple[Path, Path]:
    """A fresh directory inside the image tree: (host path, path inside the chroot)."""
    inside = Path("/var/tmp") / f"{prefix}-{uuid.uuid4().hex[:8]}"
    host = image.tree / inside.relative_to("/")
    host.mkdir(parents=True)
    return host, inside


def bench_iso(image: Image, size_mb: int) -> dict[str, object]:
    """The cached benchmark ISO of about ``size_mb`` MiB of file data; build it if missing."""
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    out = BENCH_CACHE / f"datapath-{size_mb}mb.iso"
    meta_path = out.with_suffix(".json")
    if out.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("bytes") == out.stat().st_size:
            meta["cached"] = True
            return meta
    started = time.monotonic()
    host, inside = _scratch(image, "bench-iso")
    try:
        layout = iso_layout(size_mb)
        for rel, size in layout:
            path = host / "src" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as fh:
                left = size
                while left:
                    chunk = os.urandom(min(left, 1 << 20))
                    fh.write(chunk)
                    left -= len(chunk)
        subprocess.run(
            ["chroot", str(image.tree), "xorriso", "-as", "mkisofs", "-quiet", "-R", "-J",
             "-V", "VHBABENCH", "-o", str(inside / "bench.iso"), str(inside / "src")],
            check=True, env=_ENV, capture_output=True,
        )  # fmt: skip
        tmp = out.with_suffix(".iso.tmp")
        shutil.move(str(host / "bench.iso"), tmp)
        meta = {
            "path": str(out),
            "bytes": tmp.stat().st_size,
            "sha256": sha256_file(tmp),
            "files": len(layout),
            "file_bytes": sum(size for _, size in layout),
            "made_with": "host /dev/urandom files + the image's xorriso (chroot)",
            "build_seconds": round(time.monotonic() - started, 1),
        }
        tmp.rename(out)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        meta["cached"] = False
        return meta
    finally:
        shutil.rmtree(host, ignore_errors=True)


def sglat_binary(image: Image) -> Path:
    """bench/sglat.c compiled statically with the image's gcc (cached by source hash)."""
    digest = hashlib.sha256(SGLAT_SOURCE.read_bytes()).hexdigest()[:12]
    out = BENCH_CACHE / f"sglat-{image.release}-{digest}"
    if out.exists():
        return out
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    host, inside = _scratch(image, "bench-sglat")
    try:
        shutil.copy2(SGLAT_SOURCE, host / "sglat.c")
        subprocess.run(
            ["chroot", str(image.tree), "gcc", "-O2", "-Wall", "-static",
             "-o", str(inside / "sglat"), str(inside / "sglat.c")],
            check=True, env=_ENV, capture_output=True,
        )  # fmt: skip
        shutil.copy2(host / "sglat", out)
        return out
    finally:
        shutil.rmtree(host, ignore_errors=True)
