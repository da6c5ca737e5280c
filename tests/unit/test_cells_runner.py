"""Cells and how a run turns what each cell left on disk into results (no guests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cell.sanitizers import Kind
from lab.cell.spec import CellSpec, default_cells
from lab.errors import UsageError
from lab.report.results import Status
from lab.run.config import RunConfig
from lab.run.runner import _cell_result, auto_workers, reproducer

TCG = RunConfig(cells=(), accel="tcg")


def test_cell_ids_round_trip_and_bad_ones_are_usage_errors() -> None:
    spec = CellSpec.parse("7.3-upstream-cdemu")
    assert (spec.kernel, spec.module, spec.responder) == ("7.3", "upstream", "cdemu")
    assert spec.cell_id == "7.3-upstream-cdemu"
    with pytest.raises(UsageError, match="expected SERIES-MODULE-RESPONDER"):
        CellSpec.parse("7.3")
    with pytest.raises(UsageError, match="unknown module"):
        CellSpec("6.12", "Theirs!", "ours")
    # A --module tree's name is a module kind of its own (checked against the run's config).
    assert CellSpec.parse("6.12-vhbamodule-ours").module == "vhbamodule"


def test_default_matrix_adds_cross_stack_cells_on_the_reference_kernel() -> None:
    ids = [c.cell_id for c in default_cells(["5.10", "6.12", "7.3"])]
    assert ids == ["6.12-debug-ours-ours", "5.10-ours-ours", "6.12-ours-ours", "7.3-ours-ours",
                   "6.12-upstream-ours", "6.12-ours-cdemu"]  # fmt: skip
    assert [c.cell_id for c in default_cells(["7.3"])] == ["7.3-ours-ours"]


def test_default_matrix_starts_with_the_debug_cell_of_the_reference_kernel() -> None:
    ids = [c.cell_id for c in default_cells(["6.12", "7.3"])]
    assert ids[0] == "6.12-debug-ours-ours"
    assert CellSpec.parse(ids[0]) == CellSpec("6.12-debug")
    assert "6.12-debug-ours-ours" not in [c.cell_id for c in default_cells(["7.3"])]


def _cell_dir(tmp_path: Path, info: dict | None, tests: list[dict]) -> Path:
    cell_dir = tmp_path / "cells" / "6.12-ours-ours"
    cell_dir.mkdir(parents=True)
    if info is not None:
        (cell_dir / "cell.json").write_text(json.dumps(info))
    (cell_dir / "tests.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tests))
    return cell_dir


INFO = {"kernel": {"series": "6.12", "version": "6.12.1-1", "abi": "6.12.1+deb13-amd64",
                   "release": "trixie"}, "accel": "tcg", "state": "done", "broken": None,
        "duration_s": 12.5, "artifacts": {"serial": "serial.log"}}  # fmt: skip
TEST = {"name": "spc/test_inquiry", "group": "spc", "status": "pass", "duration_s": 0.5,
        "message": None, "artifacts": {"dmesg": "tests/spc__test_inquiry/dmesg.txt"}}  # fmt: skip


def test_a_healthy_cell_passes_with_run_relative_artifacts(tmp_path: Path) -> None:
    spec = CellSpec("6.12")
    cell = _cell_result(spec, _cell_dir(tmp_path, INFO, [TEST]), TCG)
    assert cell.status is Status.PASS and cell.overall is Status.PASS
    assert cell.artifacts == {"serial": "cells/6.12-ours-ours/serial.log"}
    assert cell.tests[0].artifacts["dmesg"].startswith("cells/6.12-ours-ours/tests/")
    assert cell.reproducer == "vhba-lab run --cell 6.12-ours-ours"


def test_sanitizer_findings_get_run_relative_report_paths(tmp_path: Path) -> None:
    rel = "tests/spc__test_inquiry/sanitizer-1.txt"
    title = "BUG: KASAN: slab-use-after-free in vhba_ctl_read+0x1e4/0x560 [vhba]"
    row = {**TEST, "status": "sanitizer", "message": title,
           "artifacts": {**TEST["artifacts"], "sanitizer-1": rel},
           "findings": [{"kind": "kasan", "title": title, "artifact": rel}]}  # fmt: skip
    cell = _cell_result(CellSpec("6.12"), _cell_dir(tmp_path, INFO, [row, TEST]), TCG)
    sanitizer, plain = cell.tests
    assert sanitizer.status is Status.SANITIZER and cell.overall is Status.SANITIZER
    (finding,) = sanitizer.findings
    assert (finding.kind, finding.title) == (Kind.KASAN, title)
    assert finding.artifact == f"cells/6.12-ours-ours/{rel}" == sanitizer.artifacts["sanitizer-1"]
    assert plain.findings == []  # rows written before findings existed have none


def test_broken_product_is_a_failure_and_harness_trouble_an_error(tmp_path: Path) -> None:
    spec = CellSpec("6.12")
    broken = _cell_result(spec, _cell_dir(tmp_path / "a", {**INFO, "broken": "did not build"},
                                          []), TCG)  # fmt: skip
    assert broken.status is Status.FAIL and broken.message == "did not build"
    harness = _cell_result(spec, _cell_dir(tmp_path / "b", {**INFO, "state": "error"}, []),
                           TCG)  # fmt: skip
    assert harness.status is Status.ERROR
    nothing = _cell_result(spec, _cell_dir(tmp_path / "c", None, []), TCG)
    assert nothing.status is Status.ERROR and "no results" in (nothing.message or "")


def test_a_cell_that_never_started_still_names_its_kernel(tmp_path: Path) -> None:
    """An interrupted run reports the cells it never reached, with catalogue facts."""
    facts = {"series": "7.3", "version": "7.3.1-1", "abi": "7.3.1+deb14-amd64", "release": "sid"}
    cell = _cell_result(CellSpec("7.3"), _cell_dir(tmp_path, None, []), TCG, facts)
    assert cell.kernel == facts and cell.status is Status.ERROR


def test_a_cell_cut_short_is_an_error_not_a_pass(tmp_path: Path) -> None:
    """A run stopped mid-cell (SIGTERM, Ctrl-C) leaves a cell whose tests so far
    passed, and whose teardown may even have run: it must not look green."""
    spec = CellSpec("6.12")
    cut = _cell_result(spec, _cell_dir(tmp_path / "a", INFO, [TEST]), TCG, expected=3,
                       interrupted=True)  # fmt: skip
    assert cut.status is Status.ERROR and cut.overall is Status.ERROR
    assert cut.message == "unfinished: 1 of 3 tests ran (the run was interrupted)"
    died = _cell_result(spec, _cell_dir(tmp_path / "b", INFO, [TEST]), TCG, expected=2)
    assert died.message == "unfinished: 1 of 2 tests ran (its worker stopped early)"
    never = _cell_result(spec, _cell_dir(tmp_path / "c", None, []), TCG, expected=3,
                         interrupted=True)  # fmt: skip
    assert never.status is Status.ERROR
    assert never.message == "not run: the run was interrupted before this cell started"
    whole = _cell_result(spec, _cell_dir(tmp_path / "d", INFO, [TEST]), TCG, expected=1)
    assert whole.status is Status.PASS and whole.message is None


def test_reproducer_names_the_cell_test_and_faults() -> None:
    spec = CellSpec("7.3")
    faulty = RunConfig(cells=(), responder_faults=("capacity:blocks=1000",))
    line = reproducer(spec, "block/test_size", faulty)
    assert line == ("vhba-lab run --cell 7.3-ours-ours --responder-fault capacity:blocks=1000"
                    " -k test_size")  # fmt: skip
    per_test = RunConfig(cells=(), kmemleak_scans="test")
    assert reproducer(CellSpec("6.12-debug"), "attacker/test_x", per_test) == (
        "vhba-lab run --cell 6.12-debug-ours-ours --kmemleak-scans test -k test_x"
    )


def test_measurements_reach_the_result_and_old_rows_have_none(tmp_path: Path) -> None:
    measured = {**TEST, "name": "attacker/test_stalled", "group": "attacker",
                "measurements": {"other_drive_read_s": 0.8, "seed": 123456789}}  # fmt: skip
    cell = _cell_result(CellSpec("6.12"), _cell_dir(tmp_path, INFO, [measured, TEST]), TCG)
    stalled, old = cell.tests
    assert stalled.measurements == {"other_drive_read_s": 0.8, "seed": 123456789}
    assert old.measurements == {}  # a row written before measurements existed


def test_an_odd_measurement_is_dropped_not_fatal_to_the_report(tmp_path: Path) -> None:
    row = {**TEST, "measurements": {"ok": 1, "flag": True, "blob": [1, 2], "text": "a\nb"}}
    cell = _cell_result(CellSpec("6.12"), _cell_dir(tmp_path, INFO, [row]), TCG)
    assert cell.tests[0].measurements == {"ok": 1, "text": "a b"}


def test_auto_workers_is_what_cores_and_ram_hold() -> None:
    gib = 1 << 30
    assert auto_workers(cells=14, cpus=2, mem_available=24 * gib) == 2  # this kind of host
    assert auto_workers(cells=14, cpus=64, mem_available=24 * gib) == 8  # RAM-bound
    assert auto_workers(cells=3, cpus=64, mem_available=256 * gib) == 3  # no idle workers
    assert auto_workers(cells=5, cpus=1, mem_available=1 * gib) == 1  # never zero


def test_two_runs_started_in_one_second_get_their_own_directories(tmp_path: Path) -> None:
    """Seen: a second `vhba-lab run` in the same second died on FileExistsError."""
    from datetime import datetime, timezone

    from lab.run.runner import new_run_dir

    now = datetime(2026, 12, 3, 17, 52, 25, tzinfo=timezone.utc)
    first, second = new_run_dir(tmp_path, now), new_run_dir(tmp_path, now)
    assert first.name == "20261203-175225" and second.name == "20261203-175225-2"
    assert first.is_dir() and second.is_dir()


def test_the_progress_display_knows_which_failures_an_entry_lists() -> None:
    from types import SimpleNamespace

    from lab.errors import LabError
    from lab.report.known_failures import parse
    from lab.run.runner import _listed_as_known

    def offline(series: str) -> None:
        raise LabError(f"no index for {series}")

    ctx = SimpleNamespace(catalogue=SimpleNamespace(resolve=offline),
                          accel=SimpleNamespace(name="tcg"))  # fmt: skip
    entries = parse(
        '[[known]]\nkernel = "6.1*"\ntest = "cd_differential/*"\nresponder = "ours"\n'
        'reason = "cdemu-daemon\'s choice"\nissue = "docs"\nexpires = 2099-01-01\n'
        '[[known]]\nkernel = "*"\ntest = "spc/test_gone"\nreason = "r"\nissue = "i"\n'
        "expires = 2000-01-01\n"
    )
    cells = [CellSpec.parse("6.12-ours-ours"), CellSpec.parse("7.3-ours-ours")]
    listed = _listed_as_known(ctx, cells, TCG, entries)  # type: ignore[arg-type]
    assert listed("6.12-ours-ours", "cd_differential/test_same[track_info]")
    assert not listed("7.3-ours-ours", "cd_differential/test_same[track_info]"), "other kernel"
    assert not listed("6.12-ours-ours", "spc/test_gone"), "an expired entry lists nothing"
    assert not listed("9.9-ours-ours", "spc/test_x"), "not a cell of the run"
