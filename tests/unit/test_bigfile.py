"""conformance/guest/bigfile.py: the DVD's big file, written in the guest, hashed on the host."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

BIGFILE = Path(__file__).resolve().parents[2] / "conformance" / "guest" / "bigfile.py"


def _run(*args: object) -> str:
    argv = [sys.executable, str(BIGFILE), *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_the_host_digest_is_the_written_files(tmp_path: Path) -> None:
    pool, out = tmp_path / "pool.bin", tmp_path / "big.bin"
    _run("pool", pool)
    size = 3000 * 2048 + 4097  # ends in a partial block, like the real one
    _run("write", pool, size, out)
    data = out.read_bytes()
    assert len(data) == size
    assert _run("sha256", pool, size).strip() == hashlib.sha256(data).hexdigest()


def test_every_block_differs(tmp_path: Path) -> None:
    """A block read from the wrong place must not match: no two blocks are alike."""
    pool, out = tmp_path / "pool.bin", tmp_path / "big.bin"
    _run("pool", pool)
    _run("write", pool, 4096 * 2048, out)  # 8 MiB: the windows wrap around the 4 MiB pool
    data = out.read_bytes()
    blocks = {data[i : i + 2048] for i in range(0, len(data), 2048)}
    assert len(blocks) == 4096


def test_a_short_pool_is_refused(tmp_path: Path) -> None:
    pool = tmp_path / "pool.bin"
    pool.write_bytes(b"x" * 4096)
    argv = [sys.executable, str(BIGFILE), "sha256", str(pool), "8192"]
    res = subprocess.run(argv, capture_output=True, text=True)
    assert res.returncode != 0 and "the pool holds 4096 bytes" in res.stderr
