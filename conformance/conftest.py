"""The conformance suite's harness: one guest per cell, shared by that cell's tests.

Cells come from ``--lab-cells`` (ids like ``6.12-ours-ours``); each becomes
a session-scoped ``cell`` fixture parameter grouped with ``xdist_group`` so
that, under ``--dist loadgroup``, one worker owns one cell and its guest.

Around every test the harness writes a marker to /dev/kmsg, and afterwards
fails the test if its slice of the kernel log holds BUG/WARNING/Oops-class
lines or the kernel picked up a new taint bit.  A debug kernel's sanitizer
report (KASAN, lockdep, kmemleak, ...) in that window makes the test
SANITIZER instead, whatever the test itself did: the record names each
finding and links its report text.  Results are written by the
worker that ran the test into ``<run-dir>/cells/<cell>/tests.jsonl``; the
``vhba-lab run`` command turns those into the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.cellenv import CellEnv, HealthVerdict, media_set
from lab.cells import REFERENCE_KERNEL, CellSpec
from lab.context import LabContext


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vhba-lab")
    group.addoption(
        "--lab-cells",
        default=f"{REFERENCE_KERNEL}-ours-ours",
        help="comma-separated cell ids, e.g. 6.12-ours-ours,7.3-ours-ours",
    )
    group.addoption(
        "--lab-run-dir",
        type=Path,
        default=None,
        help="where cells write logs and results (default: a temp dir)",
    )
    group.addoption("--lab-accel", default=None, help="auto, kvm or tcg")
    group.addoption("--lab-mirror", default=None, help="Debian archive URI override")
    group.addoption(
        "--lab-fault",
        action="append",
        default=[],
        help="fault spec for our responder (proves the suite catches bad drives)",
    )
    group.addoption(
        "--lab-module-fault",
        default=None,
        help="build our module with this deliberate bug (proves debug cells catch it)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, so the suite is self-contained whatever ini file pytest picks.
    for line in (
        "slow: takes minutes under TCG (large media); vhba-lab run --quick skips these",
        "no_health: runs without the per-test kernel health check",
        "xdist_group(name): keep a cell's tests on one xdist worker",
    ):
        config.addinivalue_line("markers", line)


def _cells(config: pytest.Config) -> list[CellSpec]:
    return [CellSpec.parse(c.strip()) for c in config.getoption("--lab-cells").split(",") if c]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        params = [
            pytest.param(spec, id=spec.cell_id, marks=pytest.mark.xdist_group(spec.cell_id))
            for spec in _cells(metafunc.config)
        ]
        metafunc.parametrize("cell", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = request.config.getoption("--lab-run-dir")
    path = Path(configured) if configured else tmp_path_factory.mktemp("lab-run")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> LabContext:
    return LabContext(
        mirror_override=request.config.getoption("--lab-mirror"),
        accel_request=request.config.getoption("--lab-accel"),
    )


@pytest.fixture(scope="session")
def cell(request: pytest.FixtureRequest, lab: LabContext, run_dir: Path) -> Iterator[CellEnv]:
    spec: CellSpec = request.param
    env = CellEnv(
        lab,
        spec,
        run_dir / "cells" / spec.cell_id,
        media_set(run_dir),
        faults=request.config.getoption("--lab-fault"),
        module_fault=request.config.getoption("--lab-module-fault"),
    )
    try:
        env.setup()
    except BaseException:
        env.teardown("error")
        raise
    yield env
    env.teardown()


@pytest.fixture
def drive(cell: CellEnv):
    """The first virtual drive of the cell; skips when the cell's product is broken."""
    if cell.broken:
        pytest.skip(f"cell broken: {cell.broken}")
    return cell.nodes[0]


def _test_name(item: pytest.Item) -> tuple[str, str]:
    """("spc", "spc/test_inquiry") from conformance/test_02_spc.py::test_inquiry[cell]."""
    module = Path(str(item.fspath)).stem  # test_02_spc
    group = module.removeprefix("test_").lstrip("0123456789_") or module
    name = item.name.split("[", 1)[0]
    return group, f"{group}/{name}"


@dataclass(frozen=True)
class SanitizerHit:
    """Sanitizer findings of one test's call, handed from the health hook to the record."""

    verdict: HealthVerdict
    own_outcome: bool  # the test itself failed or skipped (its message is kept too)


SANITIZER_HIT = pytest.StashKey[SanitizerHit]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    env: CellEnv | None = item.funcargs.get("cell")  # type: ignore[attr-defined]
    health = None
    if env is not None and env.booted is not None and not item.get_closest_marker("no_health"):
        health = env.health_start(_test_name(item)[1])
    outcome = yield
    if health is not None and env is not None:
        name = _test_name(item)[1]
        slice_path = env.cell_dir / "tests" / name.replace("/", "__") / "dmesg.txt"
        verdict = env.health_end(health, slice_path)
        if verdict.findings:
            item.stash[SANITIZER_HIT] = SanitizerHit(verdict, outcome.excinfo is not None)
        if verdict.problem and outcome.excinfo is None:
            outcome.force_exception(AssertionError(f"kernel health: {verdict.problem}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if callspec is None or "cell" not in callspec.params:
        return
    cell_id = callspec.params["cell"].cell_id
    # A failing set-up or tear-down (e.g. restoring the drive) is a harness ERROR,
    # never silently dropped.
    if report.when == "call" or (report.when in ("setup", "teardown") and report.failed):
        _record(item, report, cell_id)


def _record(item: pytest.Item, report: pytest.TestReport, cell_id: str) -> None:
    run_dir = item.config.getoption("--lab-run-dir")
    if run_dir is None:
        return
    group, name = _test_name(item)
    hit = item.stash.get(SANITIZER_HIT, None) if report.when == "call" else None
    if hit is not None:
        status = "sanitizer"  # the kernel proved a bug: worse than anything the test said
    elif report.skipped:
        status = "skip"
    elif report.passed:
        status = "pass"
    elif report.when in ("setup", "teardown"):
        status = "error"
    else:
        status = "fail"
    message = _message(report)
    if hit is not None:
        own = f"; the test itself: {message}" if hit.own_outcome and message else ""
        message = f"{hit.verdict.problem}{own}"[:500]
    cell_dir = Path(run_dir) / "cells" / cell_id
    artifacts = {}
    slice_rel = Path("tests") / name.replace("/", "__") / "dmesg.txt"
    if (cell_dir / slice_rel).exists():
        artifacts["dmesg"] = str(slice_rel)
    if not report.passed and report.longreprtext:
        log_rel = Path("tests") / name.replace("/", "__") / "failure.txt"
        (cell_dir / log_rel).parent.mkdir(parents=True, exist_ok=True)
        (cell_dir / log_rel).write_text(report.longreprtext)
        artifacts["log"] = str(log_rel)
    elif "dmesg" in artifacts:
        artifacts["log"] = artifacts["dmesg"]
    findings = []
    if hit is not None:
        # health_end wrote them next to the slice, in this test's directory
        for label, path in hit.verdict.artifacts.items():
            artifacts[label] = str(slice_rel.parent / path.name)
        findings = [
            {"kind": s.finding.kind.value, "title": s.finding.title,
             "artifact": str(slice_rel.parent / s.path.name)}
            for s in hit.verdict.findings
        ]  # fmt: skip
    # What the test recorded with record_property (a latency, a seed): the report
    # shows it even for a pass.  Imported here to keep the change inside _record.
    from lab.results import clean_measurements

    line = {
        "name": name, "group": group, "status": status, "duration_s": round(report.duration, 3),
        "message": message, "artifacts": artifacts, "findings": findings,
        "measurements": clean_measurements(item.user_properties), "finished": time.time(),
    }  # fmt: skip
    cell_dir.mkdir(parents=True, exist_ok=True)
    with (cell_dir / "tests.jsonl").open("a") as fh:
        fh.write(json.dumps(line) + "\n")


def _message(report: pytest.TestReport) -> str | None:
    """What the report says went wrong, in one line (None when it passed)."""
    if report.passed:
        return None
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    # The crash line ("AssertionError: size 2048 != 3440640") says what broke;
    # the last line of the traceback would only name the file.
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else report.longreprtext
    return " ".join(text.strip().splitlines()[:3])[:500] if text else None
