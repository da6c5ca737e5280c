"""tests.jsonl: what the suite's workers append is what the runner reads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.report.results import Status
from lab.run import records


def test_records_round_trip_and_become_results(tmp_path: Path) -> None:
    written = records.TestRecord(
        "attacker/test_x", "attacker", "sanitizer", 1.5, "BUG: KASAN: x",
        {"sanitizer-1": "tests/attacker__test_x/sanitizer-1.txt"},
        [{"kind": "kasan", "title": "BUG: KASAN: x",
          "artifact": "tests/attacker__test_x/sanitizer-1.txt"}],
        {"seed": 7, "latency_s": 0.5}, 1.0,
    )  # fmt: skip
    records.append(tmp_path, written)
    records.append(tmp_path, records.TestRecord("spc/test_y", "spc", "pass", 0.2))
    first, second = records.load(tmp_path)
    assert first == written and second.status == "pass"
    result = first.result("cells/6.12-ours-ours")
    assert result.status is Status.SANITIZER and result.measurements == {
        "seed": 7,
        "latency_s": 0.5,
    }
    assert result.findings[0].artifact == (
        "cells/6.12-ours-ours/tests/attacker__test_x/sanitizer-1.txt"
    )
    assert records.load(tmp_path / "none") == []


def test_rows_from_older_labs_still_load(tmp_path: Path) -> None:
    old = {"name": "spc/test_z", "group": "spc", "status": "fail", "duration_s": 1,
           "message": "x", "artifacts": {}}  # fmt: skip
    (tmp_path / records.RECORDS_FILE).write_text(json.dumps(old) + "\n")
    (record,) = records.load(tmp_path)
    assert record.findings == [] and record.measurements == {} and record.duration_s == 1.0


@pytest.mark.parametrize(
    ("module", "item", "cell", "want"),
    [
        (
            "test_03_spc",
            "test_inquiry[6.12-ours-ours]",
            "6.12-ours-ours",
            ("spc", "spc/test_inquiry"),
        ),
        (
            "test_04_mmc",
            "test_read_toc[msf-6.12-ours-ours]",
            "6.12-ours-ours",
            ("mmc", "mmc/test_read_toc[msf]"),
        ),
        (
            "test_18_cd_audio",
            "test_odd[6.12-ours-cdemu-16-7]",
            "6.12-ours-cdemu",
            ("cd_audio", "cd_audio/test_odd[16-7]"),
        ),
        ("test_x", "test_plain", None, ("x", "x/test_plain")),
    ],
)
def test_parametrized_cases_keep_their_own_names(module, item, cell, want) -> None:
    """Each case of a parametrized test is its own record (they used to overwrite each other)."""
    assert records.test_name(module, item, cell) == want
