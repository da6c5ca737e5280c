"""Matrix progress: per-cell phase, counts and ETA, as lines for CI logs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from lab.run.progress import CellProgress, MatrixProgress, cell_of, status_line

CELLS = ["6.12-ours-ours", "6.12-debug-ours-ours"]


def test_tests_are_counted_per_cell_whatever_their_other_parameters() -> None:
    assert cell_of("conformance/test_03_spc.py::test_inquiry[6.12-ours-ours]", CELLS) == CELLS[0]
    assert cell_of("c/test_x.py::test_y[6.12-debug-ours-ours]", CELLS) == CELLS[1]
    assert cell_of("c/test_x.py::test_y[6.12-ours-ours-4096]", CELLS) == CELLS[0]
    assert cell_of("c/test_x.py::test_y[2048-6.12-ours-ours]", CELLS) == CELLS[0]
    assert cell_of("tests/unit/test_a.py::test_b", CELLS) is None
    # several cells run with --dist loadgroup: xdist appends the group to the id
    assert cell_of("c/test_x.py::test_y[6.12-ours-ours]@6.12-ours-ours", CELLS) == CELLS[0]
    assert (
        cell_of("c/test_x.py::test_y[7-6.12-debug-ours-ours]@6.12-debug-ours-ours", CELLS)
        == (CELLS[1])
    )


def test_eta_comes_from_the_last_run_or_from_the_cells_own_pace(tmp_path: Path) -> None:
    cell = CellProgress("6.12-ours-ours", tmp_path, expected_s=300.0, total=100)
    assert cell.eta(0.0) == 300.0 and cell.phase == "queued"
    cell.started, cell.done = 0.0, 10
    assert cell.eta(120.0) == 180.0
    assert cell.eta(400.0) == 3600.0, "an overdue cell: its own pace, not 0 or negative"
    assert CellProgress("x", tmp_path, expected_s=9.0, started=0.0).eta(10.0) is None
    fresh = CellProgress("7.3-ours-ours", tmp_path, total=100, started=0.0, done=25)
    assert fresh.eta(50.0) == 150.0
    assert CellProgress("x", tmp_path, started=0.0).eta(5.0) is None


def _report(nodeid: str, when: str, outcome: str) -> SimpleNamespace:
    return SimpleNamespace(
        nodeid=nodeid, when=when, outcome=outcome, passed=outcome == "passed",
        failed=outcome == "failed", skipped=outcome == "skipped",
    )  # fmt: skip


def test_ci_lines_say_phase_counts_first_failure_and_end(tmp_path: Path) -> None:
    out = io.StringIO()
    now = [0.0]
    dirs = {c: tmp_path / c for c in CELLS}
    progress = MatrixProgress(
        dirs, Console(file=out, width=200), {CELLS[0]: 100.0}, live=False, clock=lambda: now[0]
    )
    ids = [f"c/t.py::test_{n}[{CELLS[0]}]" for n in range(4)]
    progress._count(ids)
    progress.tick()
    assert out.getvalue() == "", "queued cells (no cell.json yet) are not printed"
    dirs[CELLS[0]].mkdir()
    (dirs[CELLS[0]] / "cell.json").write_text(json.dumps({"state": "running",
                                                        "cell_state": "booting"}))  # fmt: skip
    progress.tick()
    assert (
        "6.12-ours-ours: booting, 0/4 tests, 0 failed, 0m00s elapsed, ETA 1m40s" in out.getvalue()
    )
    (dirs[CELLS[0]] / "cell.json").write_text(json.dumps({"state": "running",
                                                        "cell_state": "ready"}))  # fmt: skip
    now[0] = 30.0
    progress.pytest_runtest_logreport(_report(ids[0], "call", "passed"))
    progress.pytest_runtest_logreport(_report(ids[1], "call", "failed"))
    progress.pytest_runtest_logreport(_report(ids[1], "teardown", "passed"))
    lines = out.getvalue().splitlines()
    assert lines[-2].endswith("testing, 1/4 tests, 0 failed, 0m30s elapsed, ETA 1m10s")
    assert lines[-1].endswith("testing, 2/4 tests, 1 failed, 0m30s elapsed, ETA 1m10s")
    progress.pytest_runtest_logreport(_report(ids[2], "setup", "skipped"))
    assert len(out.getvalue().splitlines()) == len(lines), "no line per test between beats"
    now[0] = 95.0
    progress.tick()
    assert out.getvalue().splitlines()[-1].endswith("3/4 tests, 1 failed, 1m35s elapsed, ETA 0m05s")
    loss = {"kind": "qemu-exit", "cause": "QEMU exited (signal 9)", "module_loaded": True}
    (dirs[CELLS[0]] / "cell.json").write_text(
        json.dumps({"state": "error", "cell_state": "broken", "loss": loss})
    )
    progress.stop()
    assert (
        out.getvalue()
        .splitlines()[-1]
        .endswith(
            "6.12-ours-ours: broken, 3/4 tests, 1 failed, 1m35s elapsed (QEMU exited (signal 9))"
        )
    )


def test_no_dots_but_pytest_keeps_its_categories() -> None:
    progress = MatrixProgress({}, Console(file=io.StringIO()), live=False)
    assert progress.pytest_report_teststatus(_report("x", "call", "failed")) == ("failed", "", "")
    assert progress.pytest_report_teststatus(_report("x", "setup", "skipped")) == (
        "skipped", "", "",
    )  # fmt: skip
    assert progress.pytest_report_teststatus(_report("x", "setup", "failed")) is None


def test_status_line_of_a_finished_cell_has_no_eta(tmp_path: Path) -> None:
    cell = CellProgress("6.1-ours-ours", tmp_path, total=2, done=2, started=0.0, ended=61.0)
    assert status_line(cell, 100.0) == "6.1-ours-ours: done, 2/2 tests, 0 failed, 1m01s elapsed"


def test_pytest_accepts_it_as_a_plugin(tmp_path: Path) -> None:
    import pytest

    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    progress = MatrixProgress({}, Console(file=io.StringIO()), live=False)
    assert pytest.main([str(tmp_path), "-q", "-p", "no:cacheprovider"], plugins=[progress]) == 0


def test_failures_a_known_entry_lists_are_counted_as_known(tmp_path: Path) -> None:
    """A person watching must not read a known failure as a red cell."""
    cell_id = CELLS[0]
    seen: list[tuple[str, str]] = []

    def listed(cell: str, test: str) -> bool:
        seen.append((cell, test))
        return test == "cd_differential/test_same[track_info]"

    out = io.StringIO()
    progress = MatrixProgress(
        {cell_id: tmp_path / cell_id}, Console(file=out, width=200), live=False,
        clock=lambda: 0.0, listed=listed,
    )  # fmt: skip
    ids = [
        f"conformance/test_19_cd_differential.py::test_same[{cell_id}-track_info]@{cell_id}",
        f"conformance/test_03_spc.py::test_inquiry[{cell_id}]@{cell_id}",
    ]
    progress._count(ids)
    for nodeid in ids:
        progress.pytest_runtest_logreport(_report(nodeid, "call", "failed"))
    cell = progress.cells[cell_id]
    assert (cell.failed, cell.known) == (2, 1)
    assert seen[0] == (cell_id, "cd_differential/test_same[track_info]")
    assert "2 failed (1 known)" in status_line(cell, 0.0)


def test_without_a_last_run_the_eta_comes_from_this_runs_finished_cells(tmp_path: Path) -> None:
    progress = MatrixProgress({}, Console(file=io.StringIO()), live=False)
    progress.cells = {
        "5.10-ours-ours": CellProgress("5.10-ours-ours", tmp_path, total=141, started=0.0,
                                       ended=600.0, state="done"),
        "6.1-ours-ours": CellProgress("6.1-ours-ours", tmp_path, total=141, started=0.0,
                                      ended=660.0, state="done"),
        "6.12-debug-ours-ours": CellProgress("6.12-debug-ours-ours", tmp_path, total=20,
                                             started=0.0, ended=3000.0, state="done"),
        "7.3-ours-ours": CellProgress("7.3-ours-ours", tmp_path, total=141, started=100.0,
                                      done=1),
    }  # fmt: skip
    running = progress.cells["7.3-ours-ours"]
    assert progress.typical(running) == 630.0, "the median of the cells with as many tests"
    assert running.eta(130.0, progress.typical(running)) == 600.0
    assert "ETA 10m00s" in status_line(running, 130.0, progress.typical(running))
    assert running.eta(130.0) == 30.0 * 140, "its own pace when nothing else is known"


def test_a_debug_cell_is_not_timed_by_plain_cells_nor_the_reverse(tmp_path: Path) -> None:
    """Seen in a matrix: 5.10 done in 8m50s made the 6.12-debug cell's ETA 0m00s at 9 min."""
    progress = MatrixProgress({}, Console(file=io.StringIO()), live=False)
    progress.cells = {
        "5.10-ours-ours": CellProgress("5.10-ours-ours", tmp_path, total=142, started=0.0,
                                       ended=530.0, state="done"),
        "6.12-debug-ours-ours": CellProgress("6.12-debug-ours-ours", tmp_path, total=142,
                                             started=0.0, done=42),
        "7.3-debug-ours-ours": CellProgress("7.3-debug-ours-ours", tmp_path, total=142,
                                            started=0.0, ended=3500.0, state="done"),
    }  # fmt: skip
    debug = progress.cells["6.12-debug-ours-ours"]
    assert progress.typical(debug) == 3500.0, "only the debug cell that finished"
    assert progress.typical(CellProgress("6.1-ours-ours", tmp_path, total=142)) == 530.0
    del progress.cells["7.3-debug-ours-ours"]
    assert progress.typical(debug) is None
    assert debug.eta(540.0, progress.typical(debug)) == 540.0 / 42 * 100
