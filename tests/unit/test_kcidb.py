"""KCIDB export: recorded runs and every status map to data kcidb-io accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
from kcidb_io.schema import LATEST

from lab.cell.sanitizers import Kind
from lab.errors import UsageError
from lab.report.kcidb import SCHEMA, kcidb_data
from lab.report.results import Cell, Run, SanitizerFinding, Status, TestResult, load_run

RUNS = Path(__file__).parent / "fixtures" / "runs"


def _recorded(name: str) -> Run:
    return load_run(RUNS / f"{name}.results.json")


def test_the_exported_schema_version_is_kcidb_io_s_latest() -> None:
    assert (LATEST.major, LATEST.minor) == (SCHEMA["major"], SCHEMA["minor"])


@pytest.mark.parametrize("name", ["spc-pass", "qemu-killed"])
def test_recorded_runs_validate(name: str, tmp_path: Path) -> None:
    run = _recorded(name)
    data = kcidb_data(run, tmp_path)
    LATEST.validate(data)
    tests = data["tests"]
    assert len(tests) == sum(len(c.tests) for c in run.cells)
    assert {b["id"] for b in data["builds"]} == {t["build_id"] for t in tests}
    assert all(t["id"].startswith("vhbalab:") and t["path"].startswith("vhba.") for t in tests)
    # The validator does refuse what KCIDB would (a status it does not know).
    with pytest.raises(jsonschema.ValidationError):
        LATEST.validate({**data, "tests": [{**tests[0], "status": "GOOD"}]})


def test_a_killed_guest_is_one_error_and_the_rest_skip(tmp_path: Path) -> None:
    data = kcidb_data(_recorded("qemu-killed"), tmp_path, base_url="https://ci.invalid/run-7")
    statuses = [t["status"] for t in data["tests"]]
    assert statuses.count("ERROR") == 1 and set(statuses) == {"PASS", "ERROR", "SKIP"}
    (error,) = (t for t in data["tests"] if t["status"] == "ERROR")
    assert "QEMU-EXIT: QEMU exited (signal 9)" in error["comment"]
    assert error["path"] == "vhba.spc.test_vpd_device_identification"
    (build,) = data["builds"]
    assert build["log_url"] == "https://ci.invalid/run-7/cells/6.12-ours-ours/build.log"


def _synthetic() -> Run:
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    kernel = {"series": "7.3", "version": "7.3.4-1", "abi": "7.3.4+deb14-amd64",
              "release": "sid"}  # fmt: skip
    kasan = SanitizerFinding(Kind.KASAN, "BUG: KASAN: slab-use-after-free in vhba_ctl_read",
                             "cells/7.3-ours-ours/tests/x/sanitizer-1.txt")  # fmt: skip
    tests = [
        TestResult("spc/test_a", "spc", Status.FAIL, 1.0, "AssertionError: 1 != 2",
                   {"log": "cells/7.3-ours-ours/tests/a/failure.txt"}),
        TestResult("attacker/test_b", "attacker", Status.SANITIZER, 2.0, kasan.headline,
                   {"sanitizer-1": kasan.artifact}, findings=[kasan]),
        TestResult("mmc/test_c", "mmc", Status.KNOWN, 0.5, "known",
                   known_failure={"test": "mmc/test_c", "reason": "upstream bug"}),
        TestResult("mmc/test_d", "mmc", Status.PASS, 0.1, measurements={"latency_s": 0.8}),
    ]  # fmt: skip
    broken = Cell("7.3-upstream-ours", kernel, "upstream", "ours", "kvm", Status.FAIL,
                  message="the upstream module did not build for 7.3.4+deb14-amd64",
                  artifacts={"build_log": "cells/7.3-upstream-ours/build.log"})  # fmt: skip
    ours = Cell("7.3-ours-ours", kernel, "ours", "ours", "kvm", tests=tests)
    return Run("synthetic", now, now, {"lab_commit": "a" * 40}, [ours, broken])


def test_every_status_maps_and_a_cell_without_tests_is_one_test(tmp_path: Path) -> None:
    data = kcidb_data(_synthetic(), tmp_path, origin="my_lab")
    LATEST.validate(data)
    assert data["checkouts"][0]["git_commit_hash"] == "a" * 40
    by_path = {t["path"]: t for t in data["tests"]}
    assert by_path["vhba.spc.test_a"]["status"] == "FAIL"
    sanitizer = by_path["vhba.attacker.test_b"]
    assert sanitizer["status"] == "FAIL" and sanitizer["misc"]["sanitizer"][0]["kind"] == "kasan"
    assert sanitizer["output_files"][0]["url"].endswith("/tests/x/sanitizer-1.txt")
    known = by_path["vhba.mmc.test_c"]
    assert known["status"] == "FAIL" and known["misc"]["known_failure"]["reason"] == "upstream bug"
    assert by_path["vhba.mmc.test_d"]["misc"]["measurements"] == {"latency_s": 0.8}
    cell = by_path["vhba"]
    assert cell["status"] == "FAIL" and "did not build" in cell["comment"]
    builds = {b["config_name"]: b for b in data["builds"]}
    assert builds["upstream"]["status"] == "FAIL" and builds["ours"]["status"] == "PASS"
    assert all(t["id"].startswith("my_lab:") for t in data["tests"])


def test_a_bad_origin_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="bad KCIDB origin 'My Lab'"):
        kcidb_data(_synthetic(), tmp_path, origin="My Lab")


def test_the_command_writes_valid_data_next_to_the_run(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text((RUNS / "spc-pass.results.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "report", "kcidb", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    LATEST.validate(json.loads((tmp_path / "kcidb.json").read_text()))
    assert "8 tests" in proc.stderr
