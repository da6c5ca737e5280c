"""A sanitizer report from kmsg to the report, through the real conformance harness.

A throw-away suite runs under ``conformance/conftest.py`` (copied as its
conftest) against a cell whose guest is faked: the health hook, the record in
tests.jsonl, the runner's assembly, results.json, junit.xml, summary.md and
index.html are all the real code.  No guest is booted.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

from lab.cell.spec import REFERENCE_KERNEL, CellSpec
from lab.report.results import Run, Status, load_run
from lab.report.write import write_report
from lab.run.config import RunConfig
from lab.run.runner import _cell_result
from tests.unit.throwaway_suite import CELL, run_suite
from tests.unit.throwaway_suite import rows as suite_rows

TCG = RunConfig(cells=(), accel="tcg")

SAMPLES = Path(__file__).parent / "fixtures" / "sanitizers"
KASAN_TITLE = "BUG: KASAN: slab-use-after-free in vhba_ctl_read+0x1e4/0x560 [vhba]"

SUITE = """
from pathlib import Path
from types import SimpleNamespace

import pytest

from lab.cell.env import CellEnv
from tests.unit.kmsg_guest import KmsgGuest

KASAN = Path({kasan!r}).read_text().split("\\n", 1)[1]  # without the sample's own marker
TAILS = {{
    "demo/test_passes_under_kasan": KASAN,
    "demo/test_fails_under_kasan": KASAN,
    "demo/test_skips_under_kasan": KASAN,
    "demo/test_warning": "[   50.000000] WARNING: CPU: 0 PID: 1 at sr.c:9 x+0x1/0x2\\n",
    "demo/test_clean": "[   50.000000] sr 2:0:0:0: [sr0] ok\\n",
}}


@pytest.fixture(scope="session")
def cell(request, run_dir):
    env = CellEnv(SimpleNamespace(), request.param, run_dir / "cells" / request.param.cell_id, {{}})
    machine = SimpleNamespace(is_running=lambda: True)
    env.booted = SimpleNamespace(guest=KmsgGuest(TAILS.__getitem__), machine=machine)
    return env


def test_passes_under_kasan(cell):
    pass


def test_fails_under_kasan(cell):
    assert 2048 == 3440640, "size 2048 != 3440640"


def test_skips_under_kasan(cell):
    pytest.skip("no second drive")


def test_warning(cell):
    pass


def test_clean(cell):
    pass
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the throw-away suite once; its run directory."""
    return run_suite(
        tmp_path_factory.mktemp("flow"), SUITE.format(kasan=str(SAMPLES / "kasan-uaf-6.12.txt"))
    )


def test_records_name_the_finding_and_link_its_report(run_dir: Path) -> None:
    rows = suite_rows(run_dir)
    row = rows["demo/test_passes_under_kasan"]
    assert row["status"] == "sanitizer"
    rel = "tests/demo__test_passes_under_kasan/sanitizer-1.txt"
    assert row["findings"] == [{"kind": "kasan", "title": KASAN_TITLE, "artifact": rel}]
    assert row["artifacts"]["sanitizer-1"] == rel
    assert row["message"].startswith(KASAN_TITLE)
    report = (run_dir / "cells" / CELL / rel).read_text()
    assert "Freed by task 418:" in report


def test_sanitizer_wins_over_what_the_test_itself_did(run_dir: Path) -> None:
    rows = suite_rows(run_dir)
    failed = rows["demo/test_fails_under_kasan"]
    assert failed["status"] == "sanitizer"
    assert failed["message"].startswith(KASAN_TITLE)
    assert "the test itself: AssertionError: size 2048 != 3440640" in failed["message"]
    skipped = rows["demo/test_skips_under_kasan"]
    assert skipped["status"] == "sanitizer"
    assert "the test itself: Skipped: no second drive" in skipped["message"]


def test_ordinary_health_failures_are_unchanged(run_dir: Path) -> None:
    rows = suite_rows(run_dir)
    warning = rows["demo/test_warning"]
    assert warning["status"] == "fail" and warning["findings"] == []
    assert warning["message"] == (
        "AssertionError: kernel health: kernel log: "
        "[   50.000000] WARNING: CPU: 0 PID: 1 at sr.c:9 x+0x1/0x2"
    )
    assert rows["demo/test_clean"]["status"] == "pass"


def test_reports_show_the_kind(run_dir: Path) -> None:
    info = {
        "kernel": {"series": REFERENCE_KERNEL, "version": "6.12.57-1",
                   "abi": "6.12.57+deb13-amd64", "release": "trixie"},
        "accel": "tcg", "state": "done", "broken": None, "duration_s": 9.0, "artifacts": {},
    }  # fmt: skip
    (run_dir / "cells" / CELL / "cell.json").write_text(json.dumps(info))
    cell = _cell_result(CellSpec.parse(CELL), run_dir / "cells" / CELL, TCG)
    assert cell.overall is Status.SANITIZER
    now = datetime(2026, 11, 24, tzinfo=timezone.utc)
    host = {"hostname": "h", "qemu_version": "q", "python": "p", "lab_commit": "c"}
    write_report(Run("flow-1", now, now, host, [cell]), run_dir, update_latest=False)

    loaded = load_run(run_dir)  # schema-checked
    assert loaded.exit_code == 1
    rel = f"cells/{CELL}/tests/demo__test_passes_under_kasan/sanitizer-1.txt"
    html = (run_dir / "index.html").read_text()
    assert f'href="{rel}">KASAN</a>' in html
    assert "## Failures and harness errors" in (run_dir / "summary.md").read_text()
    xml = JUnitXml.fromfile(str(run_dir / "junit.xml"))
    cases = {c.name: c for suite in xml for c in suite}
    (failure,) = cases["demo/test_passes_under_kasan"].result
    assert isinstance(failure, Failure)
    assert (failure.type, failure.message) == ("KASAN", KASAN_TITLE)
    assert "Memory state around the buggy address:" in (failure.text or "")
