"""Measurements from ``record_property`` to every report, through the real harness.

A throw-away suite runs under ``conformance/conftest.py`` (copied as its
conftest) with a cell that never booted, so the per-test health check stays
out of the way: ``_record``'s line in tests.jsonl, the runner's assembly,
results.json, junit.xml, summary.md and index.html are all the real code.
No guest is booted.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lab.cell.spec import REFERENCE_KERNEL, CellSpec
from lab.report.results import Run, Status, load_run
from lab.report.write import write_report
from lab.run.config import RunConfig
from lab.run.runner import _cell_result
from tests.unit.throwaway_suite import CELL, run_suite
from tests.unit.throwaway_suite import rows as suite_rows

TCG = RunConfig(cells=(), accel="tcg")

SUITE = """
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def cell(request):
    return SimpleNamespace(booted=None)  # never booted: no kernel health check


def test_stalled(cell, record_property):
    record_property("other_drive_read_s", 0.8)
    record_property("seed", 123456789)


def test_odd_values(cell, record_property):
    record_property("flag", True)  # a bool is not a number in results.json
    record_property("blob", {"a": 1})
    record_property("timeout_s", float("inf"))
    record_property("note", "two\\nlines")
    record_property("seed", 1)
    record_property("seed", 2)  # the last value wins


def test_fails_with_a_measurement(cell, record_property):
    record_property("blocks", 1000)
    assert 2048 == 3440640, "size 2048 != 3440640"


def test_measures_nothing(cell):
    pass
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the throw-away suite once; its run directory."""
    return run_suite(tmp_path_factory.mktemp("measure"), SUITE)


def test_record_keeps_numbers_and_strings_in_order(run_dir: Path) -> None:
    rows = suite_rows(run_dir)
    stalled = rows["demo/test_stalled"]
    assert stalled["status"] == "pass"
    assert list(stalled["measurements"].items()) == [
        ("other_drive_read_s", 0.8),
        ("seed", 123456789),
    ]
    assert isinstance(stalled["measurements"]["seed"], int)
    assert rows["demo/test_fails_with_a_measurement"]["measurements"] == {"blocks": 1000}


def test_record_drops_what_a_report_cannot_show(run_dir: Path) -> None:
    odd = suite_rows(run_dir)["demo/test_odd_values"]["measurements"]
    assert odd == {"timeout_s": "inf", "note": "two lines", "seed": 2}


def test_every_line_has_measurements_even_empty(run_dir: Path) -> None:
    rows = suite_rows(run_dir)
    assert rows["demo/test_measures_nothing"]["measurements"] == {}
    assert all("measurements" in row for row in rows.values())


def test_reports_show_the_measurements(run_dir: Path) -> None:
    info = {
        "kernel": {"series": REFERENCE_KERNEL, "version": "6.12.57-1",
                   "abi": "6.12.57+deb13-amd64", "release": "trixie"},
        "accel": "tcg", "state": "done", "broken": None, "duration_s": 3.0, "artifacts": {},
    }  # fmt: skip
    (run_dir / "cells" / CELL / "cell.json").write_text(json.dumps(info))
    cell = _cell_result(CellSpec.parse(CELL), run_dir / "cells" / CELL, TCG)
    now = datetime(2026, 11, 24, tzinfo=timezone.utc)
    host = {"hostname": "h", "qemu_version": "q", "python": "p", "lab_commit": "c"}
    run = Run("measure-1", now, now, host, [cell])
    write_report(run, run_dir, update_latest=False)

    loaded = load_run(run_dir)  # schema-checked
    assert loaded == run
    tests = {t.name: t for t in loaded.cell(CELL).tests}
    assert tests["demo/test_stalled"].status is Status.PASS
    assert tests["demo/test_stalled"].measurements == {
        "other_drive_read_s": 0.8,
        "seed": 123456789,
    }
    html = (run_dir / "index.html").read_text()
    assert "<code>other_drive_read_s = 0.8</code>" in html
    assert "<code>seed = 123456789</code>" in html
    summary = (run_dir / "summary.md").read_text()
    assert (
        f"- {CELL} `demo/test_stalled` PASS: `other_drive_read_s = 0.8`, `seed = 123456789`"
        in summary
    )
    root = ET.parse(run_dir / "junit.xml").getroot()
    case = root.find(".//testcase[@name='demo/test_stalled']")
    assert case is not None
    props = [(p.get("name"), p.get("value")) for p in case.findall("properties/property")]
    assert props == [("other_drive_read_s", "0.8"), ("seed", "123456789")]
