"""Shape of the data-path report: medians per stack, ratios vs baseline and scsi_debug."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.datapath import BASELINE, METRICS, REFERENCE, summarize_stacks, write_outputs


def _reps(*rows: dict[str, float | None]) -> dict:
    return {"reps": [{"metrics": row} for row in rows], "errors": []}


def _report() -> dict:
    metrics = {m: METRICS[m] for m in ("seq_direct_128k_MBps", "rand4k_qd1_iops", "tur_latency_us")}
    results = {
        "ours-ours": _reps(
            {"seq_direct_128k_MBps": 30.0, "rand4k_qd1_iops": 150.0, "tur_latency_us": 1800.0},
            {"seq_direct_128k_MBps": 34.0, "rand4k_qd1_iops": None, "tur_latency_us": 1600.0},
            {"seq_direct_128k_MBps": 32.0, "rand4k_qd1_iops": 170.0, "tur_latency_us": 2000.0},
        ),
        BASELINE: _reps(
            {"seq_direct_128k_MBps": 3.2, "rand4k_qd1_iops": 200.0, "tur_latency_us": 400.0},
        ),
        REFERENCE: _reps(
            {"seq_direct_128k_MBps": 320.0, "rand4k_qd1_iops": 6000.0, "tur_latency_us": 20.0},
        ),
    }
    return {"timestamp": "20261125-000000", **summarize_stacks(results, metrics)}


def test_medians_spread_and_ratios() -> None:
    rep = _report()
    ours = rep["stacks"]["ours-ours"]["metrics"]
    assert ours["seq_direct_128k_MBps"] == {
        "n": 3, "values": [30.0, 34.0, 32.0], "median": 32.0, "min": 30.0, "max": 34.0,
    }  # fmt: skip
    assert ours["rand4k_qd1_iops"]["n"] == 2  # a failed rep is not a zero
    base = rep["ratios"]["vs_baseline"]["ours-ours"]
    assert base == {"seq_direct_128k_MBps": 10.0, "rand4k_qd1_iops": 0.8, "tur_latency_us": 0.222}
    assert rep["ratios"]["vs_reference"]["ours-ours"]["seq_direct_128k_MBps"] == 0.1
    assert rep["ratios"]["vs_baseline"][BASELINE]["rand4k_qd1_iops"] == 1.0


def test_targets_and_json_round_trip() -> None:
    rep = _report()
    targets = {(t["stack"], t["metric"]): t for t in rep["targets"]}
    assert targets[("ours-ours", "seq_direct_128k_MBps")]["met"] is True
    assert targets[("ours-ours", "rand4k_qd1_iops")]["met"] is False
    # targets on metrics or stacks that were not run are left out
    assert ("ours-maxsectors2048", "seq_direct_1m_MBps") not in targets
    assert json.loads(json.dumps(rep)) == rep
    assert set(rep) >= {"baseline", "reference", "metrics", "stacks", "ratios", "targets"}


def test_outputs_json_latest_and_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rep = {
        **_report(),
        "kernel": {"abi": "6.12.118+deb13-amd64"},
        "accel": {"name": "tcg"},
        "options": {"reps": 3},
        "iso": {"bytes": 315_000_000},
    }
    paths = write_outputs(rep, tmp_path)
    assert json.loads(paths["json"].read_text())["timestamp"] == rep["timestamp"]
    assert (tmp_path / "datapath-latest.json").read_text() == paths["json"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
