"""Pure logic of the benchmarks: summaries, speedups, parsers, report shape."""

from __future__ import annotations

import json

import pytest

from bench.stats import (
    check_target,
    fio_json,
    iso_layout,
    mb_per_s,
    parse_dd,
    parse_fio,
    ratio_table,
    speedup,
    summarize,
)


def test_summarize_median_and_spread_skip_failed_reps() -> None:
    s = summarize([30.0, None, 10.0, 20.0])
    assert s == {"n": 3, "values": [30.0, 10.0, 20.0], "median": 20.0, "min": 10.0, "max": 30.0}


def test_summarize_even_count_and_empty() -> None:
    assert summarize([1, 2, 3, 4])["median"] == 2.5
    assert summarize([None, float("nan")]) == {
        "n": 0, "values": [], "median": None, "min": None, "max": None,
    }  # fmt: skip


def test_speedup_is_above_one_when_better_for_both_directions() -> None:
    assert speedup(40.0, 20.0, "higher") == 2.0
    assert speedup(10.0, 20.0, "higher") == 0.5
    # latency: lower is better, so half the latency is a 2x speedup
    assert speedup(100.0, 200.0, "lower") == 2.0
    assert speedup(None, 1.0, "higher") is None
    assert speedup(1.0, 0.0, "higher") is None


def _stack(**medians: float | None) -> dict:
    return {"metrics": {m: summarize([v]) for m, v in medians.items()}}


def test_ratio_table_against_a_reference_stack() -> None:
    metrics = {"seq": {"better": "higher"}, "lat": {"better": "lower"}}
    stacks = {
        "base": _stack(seq=10.0, lat=400.0),
        "ours": _stack(seq=25.0, lat=100.0),
        "broken": _stack(seq=None, lat=None),
    }
    table = ratio_table(stacks, "base", metrics)
    assert table["base"] == {"seq": 1.0, "lat": 1.0}
    assert table["ours"] == {"seq": 2.5, "lat": 4.0}
    assert table["broken"] == {"seq": None, "lat": None}
    assert ratio_table(stacks, "missing", metrics) == {}


def test_check_target_reports_without_asserting() -> None:
    ratios = {"ours": {"seq": 2.5, "iops": 0.6}}
    assert check_target(ratios, "ours", "seq", 2.0)["met"] is True
    assert check_target(ratios, "ours", "iops", 1.5) == {
        "stack": "ours", "metric": "iops", "want_speedup": 1.5, "got_speedup": 0.6, "met": False,
    }  # fmt: skip
    assert check_target(ratios, "gone", "seq", 2.0)["met"] is None


def test_parse_dd_takes_the_final_statistics_line() -> None:
    err = (
        "2406+1 records in\n2406+1 records out\n"
        "315392000 bytes (315 MB, 301 MiB) copied, 12.5 s, 25.2 MB/s\n"
    )
    assert parse_dd(err) == (315392000, 12.5)
    with pytest.raises(ValueError):
        parse_dd("dd: error reading '/dev/sr1': Input/output error")


def test_mb_per_s_is_decimal() -> None:
    assert mb_per_s(300_000_000, 10.0) == 30.0
    assert mb_per_s(1, 0.0) is None


FIO = {
    "fio version": "fio-3.39",
    "jobs": [{
        "jobname": "bench", "error": 0,
        "read": {"iops": 860.4567, "bw_bytes": 3524096, "total_ios": 8605,
                 "clat_ns": {"mean": 1150000.0,
                             "percentile": {"50.000000": 1089536, "99.000000": 3031040}}},
    }],
}  # fmt: skip


def test_parse_fio_first_job() -> None:
    got = parse_fio(FIO)
    assert got == {
        "iops": 860.5, "bw_MBps": 3.52, "ios": 8605, "errors": 0,
        "clat_mean_us": 1150.0, "clat_p50_us": 1089.5, "clat_p99_us": 3031.0,
    }  # fmt: skip


def test_fio_json_skips_leading_warnings() -> None:
    text = "fio: file hash not empty on exit\n" + json.dumps(FIO)
    assert fio_json(text)["jobs"][0]["jobname"] == "bench"
    with pytest.raises(ValueError):
        fio_json("fio: engine libaio not loadable")


@pytest.mark.parametrize("mb", [4, 64, 300])
def test_iso_layout_fills_the_size_with_big_and_small_files(mb: int) -> None:
    files = iso_layout(mb)
    total = sum(size for _, size in files)
    assert mb * 1024 * 1024 - 64 * 1024 < total <= mb * 1024 * 1024
    assert len({name for name, _ in files}) == len(files)
    assert any(size == 64 * 1024 for _, size in files)


def test_iso_layout_300mb_shape() -> None:
    files = iso_layout(300)
    sizes = [size for _, size in files]
    assert sizes.count(32 * 1024 * 1024) == 5
    assert len(files) == 670


def test_iso_layout_rejects_tiny() -> None:
    with pytest.raises(ValueError):
        iso_layout(2)
