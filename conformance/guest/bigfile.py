#!/usr/bin/env python3
"""A big file whose every 2048-byte block differs, made from a small random pool.

Runs in the guest (stdlib only, Python >= 3.9) to write the DVD's big UDF
file, and on the host to compute the file's sha256 from the same pool.
Why: the file used to come from /dev/urandom through tee and sha256sum in
the guest, about 400 s per cell under TCG; this way the guest only copies
slices of a 4 MiB pool, and the host, at native speed, does the hashing.

Block ``i`` is the pool's bytes from ``i * STRIDE mod POOL_BYTES``: STRIDE is
odd and POOL_BYTES a power of two, so no two blocks of a file under
POOL_BYTES blocks start at the same offset: a block read from the wrong
place differs from the one expected.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

BLOCK = 2048
POOL_BYTES = 4 << 20
STRIDE = 2053
_BATCH = 512  # blocks joined per write: 1 MiB


def pool_size() -> int:
    """Bytes a pool file must hold: every window, the last one included."""
    return POOL_BYTES + BLOCK


def chunks(pool: bytes, size: int) -> Iterator[bytes]:
    """The file's ``size`` bytes, about 1 MiB at a time."""
    if len(pool) < pool_size():
        raise ValueError(f"the pool holds {len(pool)} bytes, {pool_size()} needed")
    left, index, batch = size, 0, []
    while left > 0:
        start = (index * STRIDE) % POOL_BYTES
        piece = pool[start : start + min(BLOCK, left)]
        batch.append(piece)
        left -= len(piece)
        index += 1
        if len(batch) == _BATCH:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("pool", "write", "sha256"))
    ap.add_argument("pool", type=Path, help=f"{pool_size()} random bytes (pool: made)")
    ap.add_argument("size", nargs="?", type=int, help="the file's size in bytes")
    ap.add_argument("out", nargs="?", type=Path, help="write: the file to make")
    args = ap.parse_args(argv)
    if args.action == "pool":
        args.pool.write_bytes(os.urandom(pool_size()))
        return 0
    if args.size is None:
        ap.error(f"{args.action} needs the file's size")
    pool = args.pool.read_bytes()
    if len(pool) < pool_size():
        ap.error(f"the pool holds {len(pool)} bytes, {pool_size()} needed: make one with pool")
    if args.action == "sha256":
        digest = hashlib.sha256()
        for chunk in chunks(pool, args.size):
            digest.update(chunk)
        print(digest.hexdigest())
        return 0
    if args.out is None:
        ap.error("write needs the output file")
    with args.out.open("wb") as fh:
        for chunk in chunks(pool, args.size):
            fh.write(chunk)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
