"""``vhba-lab run``: run the conformance suite over cells and write the report.

pytest (with xdist, one worker per cell at a time) does the running; this
module picks the cells, hands them to pytest, then assembles what each cell
wrote (``cell.json``, ``tests.jsonl``) into a Run, applies the known-failures
list and writes results.json, junit.xml, summary.md and index.html.
A cell that left nothing behind is an ERROR, never a silent pass.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from lab.build.debug_kernel import debug_series
from lab.build.module_source import ModuleSource
from lab.cell.spec import CellSpec, default_cells
from lab.cell.state import CellLoss
from lab.context import LabContext
from lab.errors import LabError
from lab.paths import repo_root
from lab.report import known_failures
from lab.report.known_failures import KnownFailure
from lab.report.results import (
    Cell,
    Run,
    Status,
    TestResult,
    load_run,
    narrow_to_test,
)
from lab.report.write import write_report
from lab.run import records
from lab.run.config import RunConfig
from lab.run.interrupt import termination_interrupts
from lab.run.progress import MatrixProgress

CONFORMANCE_DIR = repo_root() / "conformance"


def select_cells(
    ctx: LabContext, kernels: list[str] | None, cell_ids: list[str], module: str | None = None
) -> list[CellSpec]:
    """Explicit ``--cell`` ids win; otherwise the default matrix over ``kernels`` (or all).

    ``module``: the name of a ``--module`` tree; without ``--cell`` it is tested
    with our responder on every kernel instead of the default matrix.
    """
    if cell_ids:
        specs = [CellSpec.parse(c) for c in cell_ids]
        for spec in specs:  # validate the kernel name early, with the list of valid ones
            ctx.check_kernel_name(spec.kernel)
        return specs
    if module is not None:
        return [CellSpec(series, module, "ours") for series in kernels or ["all"]
                for series in _series(ctx, series)]  # fmt: skip
    entries = ctx.resolve(kernels or ["all"])
    return default_cells([e.series for e in entries])


def _series(ctx: LabContext, name: str) -> list[str]:
    if debug_series(name):
        ctx.check_kernel_name(name)
        return [name]
    return [e.series for e in ctx.catalogue.resolve_many([name])]


def reproducer(spec: CellSpec, test: str | None = None, config: RunConfig | None = None) -> str:
    """The command that reruns ``spec`` (and ``test``) with the faults of ``config``."""
    words = ["vhba-lab", "run", "--cell", spec.cell_id]
    if config is not None:
        for fault in config.responder_faults:
            words += ["--responder-fault", fault]
        if config.module_fault:
            words += ["--module-fault", config.module_fault]
        if config.boot_fault:
            words += ["--boot-fault", config.boot_fault]
        if config.kmemleak_scans != "group":
            words += ["--kmemleak-scans", config.kmemleak_scans]
        if config.module_path and spec.module == config.module_name:
            words += ["--module", config.module_path, "--module-name", spec.module]
            if config.module_known_as:
                words += ["--module-known-as", config.module_known_as]
    line = shlex.join(words)
    return narrow_to_test(line, test) if test else line


def _host_info() -> dict[str, str]:
    from lab.vm.accel import qemu_binary

    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  cwd=repo_root()).stdout.strip()  # fmt: skip
        except OSError:
            return "unknown"

    return {
        "hostname": socket.gethostname(),
        "qemu_version": out([qemu_binary(), "--version"]).splitlines()[0],
        "python": platform.python_version(),
        "lab_commit": out(["git", "rev-parse", "--short", "HEAD"]) or "unknown",
    }


def _cell_result(
    spec: CellSpec,
    cell_dir: Path,
    config: RunConfig,
    known_kernel: dict[str, str] | None = None,
    *,
    expected: int = 0,
    interrupted: bool = False,
) -> Cell:
    """The Cell for what ``cell_dir`` holds.  ``known_kernel`` (from the catalogue)
    describes the kernel of a cell that never got far enough to write it (an
    interrupted run), so the report still lists that cell.  ``expected`` is how
    many tests the run gave the cell (0: not known): a cell with fewer records
    was cut short (``interrupted``: by a signal to the run) and is an ERROR, even
    if every test it ran passed and its teardown ran."""
    info: dict = {}
    if (cell_dir / "cell.json").exists():
        info = json.loads((cell_dir / "cell.json").read_text())
    tests = [record.result(f"cells/{spec.cell_id}") for record in records.load(cell_dir)]
    kernel = info.get("kernel") or {}
    if not kernel.get("abi"):
        kernel = known_kernel or {"series": spec.kernel}
    status = Status.PASS
    message = None
    if not info and interrupted:
        status, message = Status.ERROR, "not run: the run was interrupted before this cell started"
    elif not info:
        status, message = Status.ERROR, "the cell left no results (harness crashed?)"
    elif info.get("loss"):
        loss = CellLoss.from_json(info["loss"])
        status, message = loss.status, f"cell broken: {loss.message}"
    elif info.get("state") == "error":
        status, message = Status.ERROR, "cell set-up failed in the harness; see its tests' logs"
    elif info.get("broken"):
        status, message = Status.FAIL, info["broken"]
    elif len(tests) < expected:
        why = "the run was interrupted" if interrupted else "its worker stopped early"
        status, message = Status.ERROR, f"unfinished: {len(tests)} of {expected} tests ran ({why})"
    return Cell(
        cell_id=spec.cell_id,
        kernel={k: str(v) for k, v in kernel.items() if v is not None},
        module=spec.module,
        responder=spec.responder,
        accel=info.get("accel", config.accel),
        status=status,
        duration_s=float(info.get("duration_s", 0.0)),
        tests=tests,
        artifacts={k: f"cells/{spec.cell_id}/{v}" for k, v in info.get("artifacts", {}).items()},
        reproducer=reproducer(spec, config=config),
        module_provenance={k: str(v) for k, v in (info.get("module_provenance") or {}).items()},
        boot_retries=[str(line)[:500] for line in info.get("boot_retries") or []],
        message=message,
    )


def _kernel_facts(ctx: LabContext, spec: CellSpec) -> dict[str, str] | None:
    try:  # a debug kernel's base entry: its source is exactly that version
        entry = ctx.catalogue.resolve(debug_series(spec.kernel) or spec.kernel)
    except LabError:
        return None
    return {
        "series": spec.kernel,
        "version": entry.version,
        "abi": entry.abi,
        "release": entry.release,
    }


def _listed_as_known(
    ctx: LabContext, cells: list[CellSpec], config: RunConfig, entries: list[KnownFailure]
) -> Callable[[str, str], bool]:
    """For the progress display: whether an unexpired entry lists a test for a cell."""
    today = dt.date.today()
    live = [entry for entry in entries if not entry.expired(today)]
    shells = {}
    for spec in cells:
        shared = config.module_known_as if spec.module == config.module_name else None
        shells[spec.cell_id] = Cell(
            cell_id=spec.cell_id, kernel=_kernel_facts(ctx, spec) or {"series": spec.kernel},
            module=spec.module, responder=spec.responder, accel=ctx.accel.name,
            module_provenance={"known_as": shared} if shared else {},
        )  # fmt: skip

    def listed(cell_id: str, test: str) -> bool:
        cell = shells.get(cell_id)
        result = TestResult(test, test.partition("/")[0], Status.FAIL)
        return cell is not None and any(entry.applies_to(cell, result) for entry in live)

    return listed


def run_config(
    ctx: LabContext,
    cells: list[CellSpec],
    *,
    keyword: str | None = None,
    quick: bool = False,
    faults: list[str] | None = None,
    module_fault: str | None = None,
    boot_fault: str | None = None,
    module: ModuleSource | None = None,
    kmemleak_scans: str = "group",
) -> RunConfig:
    """The run's configuration, with the accelerator chosen here once for every worker."""
    config = RunConfig(
        cells=tuple(c.cell_id for c in cells), accel=ctx.accel.name,
        mirror=ctx.mirror_override, security_mirror=ctx.security_override,
        refresh=False,  # the parent already refreshed the indices (ctx.catalogue)
        quick=quick, keyword=keyword, responder_faults=tuple(faults or ()),
        module_fault=module_fault, boot_fault=boot_fault,
        module_path=module.given if module else None, module_name=module.name if module else None,
        module_known_as=module.known_as if module else None, kmemleak_scans=kmemleak_scans,
    )  # fmt: skip
    config.specs()  # every cell's module is one the run can build
    return config


def boot_retries(cell_dir: Path) -> list[str]:
    """The boots a cell retried (infrastructure, not a verdict), one line each, from cell.json."""
    try:
        return list(json.loads((cell_dir / "cell.json").read_text()).get("boot_retries") or [])
    except (OSError, ValueError):
        return []


def _previous_run(reports: Path) -> Run | None:
    """The last run (``reports/latest``), for its durations and the report's comparison."""
    latest = reports / "latest"
    if not latest.exists():
        return None
    try:
        return load_run(latest)
    except Exception:  # a broken previous report must not sink this one
        return None


#: What one guest takes of the host: a core for its vCPUs' TCG threads (or KVM
#: exits) and RAM for QEMU's resident size (~1.5-2.5 GB for a 2 GiB guest).
GUEST_CORES = 1
GUEST_RAM_BYTES = 3 << 30


def auto_workers(cells: int, cpus: int, mem_available: int) -> int:
    """How many cells to run at once: as many guests as the host's cores and RAM hold."""
    fit = min(cpus // GUEST_CORES, mem_available // GUEST_RAM_BYTES)
    return max(1, min(cells, fit))


def _mem_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes (one guest's worth if unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return GUEST_RAM_BYTES


def new_run_dir(reports: Path, started: dt.datetime) -> Path:
    """A new ``reports/<run id>``: the start time, then ``-2``, ``-3`` ... within one second."""
    reports.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    run_dir, n = reports / stamp, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = reports / f"{stamp}-{n}"


def run_matrix(
    ctx: LabContext, config: RunConfig, reports: Path, *, workers: int | None = None
) -> Run:
    """Run every cell of ``config``; ``workers`` cells at once (None: :func:`auto_workers`)."""
    started = dt.datetime.now(dt.timezone.utc)
    run_dir = new_run_dir(reports, started)
    run_id = run_dir.name
    cells = config.specs()
    if workers is None:
        workers = auto_workers(len(cells), os.cpu_count() or 1, _mem_available())
    ctx.say(
        f"run {run_id}: {len(cells)} cells on {ctx.accel.name} ({ctx.accel.reason}), "
        f"{workers} at a time"
    )
    for spec in cells:
        ctx.say(f"  cell {spec.cell_id}")
    config_file = config.write(run_dir.resolve())
    # Read once: the progress display and the report judge by the same entries,
    # and a broken file stops the run before any guest boots.
    entries = known_failures.load()
    args = [
        str(CONFORMANCE_DIR), "--lab-config", str(config_file),
        "--lab-run-dir", str(run_dir.resolve()),
        "-p", "no:cacheprovider", "-o", "console_output_style=count", "-q", "-rfE",
        "--rootdir", str(repo_root()),
    ]  # fmt: skip
    if workers > 1:
        args += ["-n", str(workers), "--dist", "loadgroup"]
    else:
        args += ["-p", "no:xdist"]
    if config.keyword:
        args += ["-k", config.keyword]
    if config.quick:
        args += ["-m", "not slow"]
    previous = _previous_run(reports)
    expected = {c.cell_id: c.duration_s for c in previous.cells} if previous else {}
    # pytest captures fd 2 while tests run; the progress display writes to a copy
    # of it taken now, as pytest's own terminal reporter does.
    with os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1) as stderr:
        progress = MatrixProgress(
            {s.cell_id: run_dir / "cells" / s.cell_id for s in cells},
            Console(file=stderr, highlight=False, log_path=False),
            expected,
            listed=_listed_as_known(ctx, cells, config, entries),
        )
        with termination_interrupts() as termination:
            outcome = pytest.main(args, plugins=[progress])
            termination.hold()  # what is left is the report: a second signal waits for it
            planned = {s.cell_id: progress.cells[s.cell_id].total for s in cells}
            interrupted = outcome == pytest.ExitCode.INTERRUPTED
            return _report(ctx, config, run_dir, started, previous, entries, planned, interrupted)


def _report(
    ctx: LabContext,
    config: RunConfig,
    run_dir: Path,
    started: dt.datetime,
    previous: Run | None,
    entries: list[KnownFailure],
    planned: dict[str, int],
    interrupted: bool,
) -> Run:
    """Turn what the cells left in ``run_dir`` into the run's results and report;
    ``planned`` is how many tests each cell was given."""
    if interrupted:
        ctx.say("run interrupted: reporting what ran")
    cell_results = [
        _cell_result(s, run_dir / "cells" / s.cell_id, config, _kernel_facts(ctx, s),
                     expected=planned.get(s.cell_id, 0), interrupted=interrupted)
        for s in config.specs()
    ]  # fmt: skip
    run = Run(
        run_id=run_dir.name,
        started=started,
        finished=dt.datetime.now(dt.timezone.utc),
        host=_host_info(),
        cells=cell_results,
    )
    run = known_failures.apply(run, entries, dt.date.today())
    for entry in [] if interrupted else known_failures.now_passing(run, entries):
        ctx.say(
            f"  note: known failure {entry.test} ({entry.source}) passed wherever it applies "
            "in this run: the bug may be fixed; remove the entry"
        )
    write_report(run, run_dir, previous)
    for cell in run.cells:
        ctx.say(f"  {cell.cell_id}: {cell.overall.value.upper()}"
                f"{' - ' + cell.message if cell.message else ''}")  # fmt: skip
        for retry in boot_retries(run_dir / "cells" / cell.cell_id):
            ctx.say(f"    boot retried (infrastructure): {retry}")
    ctx.say(f"report: {run_dir / 'index.html'}")
    return run
