"""The conformance suite's harness: one guest per cell, shared by that cell's tests.

Cells come from the run configuration ``vhba-lab run`` writes (``--lab-config``,
:mod:`lab.run.config`; ids like ``6.12-ours-ours``); each becomes
a session-scoped ``cell`` fixture parameter grouped with ``xdist_group`` so
that, under ``--dist loadgroup``, one worker owns one cell and its guest.

Around every test the harness writes a marker to /dev/kmsg, and afterwards
fails the test if its slice of the kernel log holds BUG/WARNING/Oops-class
lines or the kernel picked up a new taint bit.  A debug kernel's sanitizer
report (KASAN, lockdep, kmemleak, ...) in that window makes the test
SANITIZER instead, whatever the test itself did: the record names each
finding and links its report text.

A cell whose guest is lost (set-up failed even after the boot retry, QEMU
died, ssh went silent) is broken once: the test that saw it is recorded
with the cause :mod:`lab.cell.state` names (ERROR for infrastructure, FAIL
for a kernel panic with the module in), and every later test of the cell is
skipped with "cell broken: <cause>".  Results are written by the
worker that ran the test into ``<run-dir>/cells/<cell>/tests.jsonl``; the
``vhba-lab run`` command turns those into the report.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.build.module_source import module_source
from lab.cell.env import CellEnv, media_set
from lab.cell.health import HealthVerdict
from lab.cell.spec import REFERENCE_KERNEL, CellSpec
from lab.cell.state import CellLoss
from lab.context import LabContext
from lab.errors import GuestLostError
from lab.report.results import clean_measurements
from lab.run import records
from lab.run.config import RunConfig
from lab.run.interrupt import termination_interrupts


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vhba-lab")
    group.addoption(
        "--lab-config",
        type=Path,
        default=None,
        help="the run configuration written by 'vhba-lab run' (lab/run/config.py; default: "
        f"the reference cell {REFERENCE_KERNEL}-ours-ours with automatic accelerator)",
    )
    group.addoption(
        "--lab-run-dir",
        type=Path,
        default=None,
        help="where cells write logs and results (default: a temp dir)",
    )


def _config(config: pytest.Config) -> RunConfig:
    path = config.getoption("--lab-config")
    if path is None:
        return RunConfig(cells=(f"{REFERENCE_KERNEL}-ours-ours",))
    return RunConfig.read(path)


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, so the suite is self-contained whatever ini file pytest picks.
    for line in (
        "slow: waits by design (SCSI timeouts, many drives, services, a 2nd stack, big media); "
        "--quick skips it",
        "no_health: runs without the per-test kernel health check",
        "xdist_group(name): keep a cell's tests on one xdist worker",
    ):
        config.addinivalue_line("markers", line)
    if hasattr(config, "workerinput"):
        # A CI engine that cancels a job signals the whole process group: a worker
        # then stops as on Ctrl-C, so its cell's teardown stops QEMU and keeps the
        # logs (the runner's own process does the same in lab.run.runner).
        stack = contextlib.ExitStack()
        stack.enter_context(termination_interrupts())
        config.add_cleanup(stack.close)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        params = [
            pytest.param(spec, id=spec.cell_id, marks=pytest.mark.xdist_group(spec.cell_id))
            for spec in _config(metafunc.config).specs()
        ]
        metafunc.parametrize("cell", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = request.config.getoption("--lab-run-dir")
    path = Path(configured) if configured else tmp_path_factory.mktemp("lab-run")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def run_config(request: pytest.FixtureRequest) -> RunConfig:
    return _config(request.config)


@pytest.fixture(scope="session")
def lab(run_config: RunConfig) -> LabContext:
    return LabContext(
        mirror_override=run_config.mirror,
        security_override=run_config.security_mirror,
        accel_request=run_config.accel,
        refresh=run_config.refresh,
    )


@pytest.fixture(scope="session")
def cell(
    request: pytest.FixtureRequest, lab: LabContext, run_config: RunConfig, run_dir: Path
) -> Iterator[CellEnv]:
    spec: CellSpec = request.param
    env = CellEnv(
        lab,
        spec,
        run_dir / "cells" / spec.cell_id,
        media_set(run_dir),
        faults=list(run_config.responder_faults),
        module_fault=run_config.module_fault,
        boot_fault=run_config.boot_fault,
        kmemleak_scans=run_config.kmemleak_scans,
        module_source=(
            module_source(
                run_config.module_path, run_config.module_name, run_config.module_known_as
            )
            if run_config.module_path
            else None
        ),
    )
    try:
        env.setup()
    except BaseException:
        env.teardown("error")
        raise
    yield env
    env.teardown("error" if env.loss is not None else "done")


LOSS = pytest.StashKey[CellLoss]()


@pytest.fixture(autouse=True)
def _cell_gate(request: pytest.FixtureRequest) -> None:
    """A broken cell runs no more tests: the first one reports the loss, the rest skip."""
    if "cell" not in request.fixturenames:
        return
    env = request.getfixturevalue("cell")
    if not isinstance(env, CellEnv) or env.loss is None:
        return
    if not env.loss_reported:
        env.loss_reported = True
        request.node.stash[LOSS] = env.loss
        raise GuestLostError(env.loss.message)
    pytest.skip(f"cell broken: {env.loss.message}")


@pytest.fixture
def drive(cell: CellEnv):
    """The first virtual drive of the cell; skips when the cell's product is broken.

    When an earlier test failed to bring the drive back (``restart_drive`` left
    no nodes), it is restarted here, so that test's failure does not become
    every later test's: seen on 6.16, where a 30 s restart after sixteen
    drives timed out and the next tests ran against nodes that were gone.
    """
    if cell.broken:
        pytest.skip(f"cell broken: {cell.broken}")
    if not cell.nodes:
        from scsi_helpers import restart_drive  # the suite's helpers; the lab's tests run without

        restart_drive(cell)
    return cell.nodes[0]


def _test_name(item: pytest.Item) -> tuple[str, str]:
    """(group, name) of a collected test; see :func:`lab.run.records.test_name`."""
    return records.test_name(Path(str(item.fspath)).stem, item.name, _cell_id(item))


def _cell_id(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    cell = callspec.params.get("cell") if callspec is not None else None
    return cell.cell_id if cell is not None else None


@dataclass(frozen=True)
class SanitizerHit:
    """Sanitizer findings of one test's call, handed from the health hook to the record."""

    verdict: HealthVerdict
    own_outcome: bool  # the test itself failed or skipped (its message is kept too)


SANITIZER_HIT = pytest.StashKey[SanitizerHit]()
# Whether the test is its group's last in this worker's run (kmemleak scans after it).
GROUP_ENDS = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    item.stash[GROUP_ENDS] = nextitem is None or _group_key(nextitem) != _group_key(item)
    yield


def _group_key(item: pytest.Item) -> tuple[str, str | None]:
    """The test's group (its module) and cell: tests of one key run one after another."""
    return Path(str(item.fspath)).stem, _cell_id(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    env: CellEnv | None = item.funcargs.get("cell")  # type: ignore[attr-defined]
    health = None
    if env is not None and env.booted is not None and not item.get_closest_marker("no_health"):
        health = env.health.start(_test_name(item)[1])
    outcome = yield
    if health is not None and env is not None and env.loss is None and not _lost(outcome):
        name = _test_name(item)[1]
        slice_path = env.cell_dir / "tests" / name.replace("/", "__") / "dmesg.txt"
        try:
            verdict = env.health.end(health, slice_path, item.stash.get(GROUP_ENDS, True))
        except GuestLostError as exc:
            outcome.force_exception(exc)
            return
        if verdict.findings:
            item.stash[SANITIZER_HIT] = SanitizerHit(verdict, outcome.excinfo is not None)
        if verdict.problem and outcome.excinfo is None:
            outcome.force_exception(AssertionError(f"kernel health: {verdict.problem}"))


def _lost(outcome) -> bool:
    excinfo = getattr(outcome, "excinfo", None)
    return excinfo is not None and isinstance(excinfo[1], GuestLostError)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if callspec is None or "cell" not in callspec.params:
        return
    env = item.funcargs.get("cell")  # type: ignore[attr-defined]
    if isinstance(env, CellEnv) and report.failed and LOSS not in item.stash:
        seen = call.excinfo.value if call.excinfo is not None else None
        # The first sign of a lost guest: the channel said so, or QEMU is gone
        # (whatever the test itself then tripped over).
        if isinstance(seen, GuestLostError) or (env.loss is None and env.qemu_gone()):
            loss = env.guest_lost(seen or GuestLostError("QEMU is not running"))
            if not env.loss_reported:
                env.loss_reported = True
                item.stash[LOSS] = loss
    cell_id = callspec.params["cell"].cell_id
    # A failing set-up or tear-down (e.g. restoring the drive) is a harness ERROR,
    # never silently dropped; a test skipped in set-up (broken cell) is listed too.
    if (
        report.when == "call"
        or (report.when in ("setup", "teardown") and report.failed)
        or (report.when == "setup" and report.skipped)
    ):
        _record(item, report, cell_id)


def _record(item: pytest.Item, report: pytest.TestReport, cell_id: str) -> None:
    run_dir = item.config.getoption("--lab-run-dir")
    if run_dir is None:
        return
    group, name = _test_name(item)
    hit = item.stash.get(SANITIZER_HIT, None) if report.when == "call" else None
    loss = item.stash.get(LOSS, None)
    if loss is not None:
        status = loss.status.value  # ERROR unless the kernel blamed the module (lab.cell.state)
    elif hit is not None:
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
    if loss is not None:
        message = f"cell broken: {loss.message}"[:500]
    elif hit is not None:
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
        # health.end wrote them next to the slice, in this test's directory
        for label, path in hit.verdict.artifacts.items():
            artifacts[label] = str(slice_rel.parent / path.name)
        findings = [
            {"kind": s.finding.kind.value, "title": s.finding.title,
             "artifact": str(slice_rel.parent / s.path.name)}
            for s in hit.verdict.findings
        ]  # fmt: skip
    # What the test recorded with record_property (a latency, a seed): the report
    # shows it even for a pass.
    records.append(cell_dir, records.TestRecord(
        name=name, group=group, status=status, duration_s=round(report.duration, 3),
        message=message, artifacts=artifacts, findings=findings,
        measurements=clean_measurements(item.user_properties), finished=time.time(),
    ))  # fmt: skip


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
