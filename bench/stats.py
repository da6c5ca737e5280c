"""Pure helpers shared by the benchmarks: summaries, ratios, parsers, report shape.

Nothing here touches a guest, so all of it is unit-tested
(tests/unit/test_bench_stats.py).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

_DD = re.compile(r"(\d+) bytes\b.*copied, ([0-9.eE+-]+) s")


def summarize(values: Iterable[float | None]) -> dict[str, Any]:
    """Median and spread of the repetitions that produced a number (None = failed rep)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return {"n": 0, "values": [], "median": None, "min": None, "max": None}
    return {
        "n": len(vals),
        "values": [round(v, 3) for v in vals],
        "median": round(statistics.median(vals), 3),
        "min": round(min(vals), 3),
        "max": round(max(vals), 3),
    }


def speedup(value: float | None, base: float | None, better: str) -> float | None:
    """How many times better ``value`` is than ``base``: > 1 always means better.

    ``better="higher"`` (MB/s, IOPS): value / base.  ``better="lower"``
    (latency): base / value.  None when either side is missing or zero.
    """
    if value is None or base is None or value <= 0 or base <= 0:
        return None
    ratio = value / base if better == "higher" else base / value
    return round(ratio, 3)


def ratio_table(
    stacks: Mapping[str, Mapping[str, Any]],
    reference: str,
    metrics: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, float | None]]:
    """Speedup of every stack's median over ``reference``'s median, per metric.

    ``stacks[name]["metrics"][metric]`` is a :func:`summarize` dict.  A
    reference that is missing (failed stack) gives an empty table.
    """
    ref = stacks.get(reference)
    if not ref:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for name, stack in stacks.items():
        row: dict[str, float | None] = {}
        for metric, meta in metrics.items():
            mine = stack.get("metrics", {}).get(metric, {}).get("median")
            theirs = ref.get("metrics", {}).get(metric, {}).get("median")
            row[metric] = speedup(mine, theirs, meta.get("better", "higher"))
        out[name] = row
    return out


def parse_dd(stderr: str) -> tuple[int, float]:
    """Bytes and seconds from GNU dd's final statistics line (run with LC_ALL=C)."""
    matches = _DD.findall(stderr)
    if not matches:
        raise ValueError(f"no dd statistics in: {stderr.strip()[-300:]!r}")
    nbytes, seconds = matches[-1]
    return int(nbytes), float(seconds)


def mb_per_s(nbytes: int, seconds: float) -> float | None:
    """Decimal megabytes per second (as dd and fio print them)."""
    if seconds <= 0:
        return None
    return round(nbytes / seconds / 1e6, 2)


def parse_fio(doc: Mapping[str, Any]) -> dict[str, Any]:
    """IOPS, bandwidth and completion latency of fio's first job (--output-format=json)."""
    job = doc["jobs"][0]
    read = job["read"]
    clat = read.get("clat_ns", {})
    pct = clat.get("percentile", {}) or {}

    def pick(key: str) -> float | None:
        val = pct.get(key)
        return round(val / 1000.0, 1) if val is not None else None

    return {
        "iops": round(float(read["iops"]), 1),
        "bw_MBps": round(read.get("bw_bytes", 0) / 1e6, 2),
        "ios": int(read.get("total_ios", 0)),
        "errors": int(job.get("error", 0)),
        "clat_mean_us": round(clat.get("mean", 0.0) / 1000.0, 1),
        "clat_p50_us": pick("50.000000"),
        "clat_p99_us": pick("99.000000"),
    }


def fio_json(stdout: str) -> dict[str, Any]:
    """fio's JSON document, skipping any warning lines fio prints before it."""
    import json

    start = stdout.find("{")
    if start < 0:
        raise ValueError(f"no JSON in fio output: {stdout.strip()[-300:]!r}")
    return json.loads(stdout[start:])


def check_target(
    ratios: Mapping[str, Mapping[str, float | None]], stack: str, metric: str, want: float
) -> dict[str, Any]:
    """One acceptance target, reported (never asserted)."""
    got = ratios.get(stack, {}).get(metric)
    return {
        "stack": stack,
        "metric": metric,
        "want_speedup": want,
        "got_speedup": got,
        "met": None if got is None else got >= want,
    }


def iso_layout(total_mb: int) -> list[tuple[str, int]]:
    """File names and sizes of the benchmark ISO: ~60 % in 32 MiB files,
    ~30 % in 1 MiB files, the rest in 64 KiB files (big sequential files and
    many small ones, so the buffered read exercises metadata and readahead)."""
    if total_mb < 4:
        raise ValueError("the benchmark ISO needs at least 4 MB")
    total = total_mb * 1024 * 1024
    big = 32 * 1024 * 1024
    n_big = int(total * 0.6) // big
    rest = total - n_big * big
    n_mid = int(rest * 0.75) // (1024 * 1024)
    rest -= n_mid * 1024 * 1024
    n_small = rest // (64 * 1024)
    files = [(f"big/big{i:02d}.bin", big) for i in range(n_big)]
    files += [(f"mid/mid{i:03d}.bin", 1024 * 1024) for i in range(n_mid)]
    files += [(f"small/s{i // 100:02d}/small{i:04d}.bin", 64 * 1024) for i in range(n_small)]
    return files
