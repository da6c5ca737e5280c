"""Live progress of a matrix run: per cell, its phase, tests done/total, failures, elapsed, ETA.

A matrix run can last an hour; pytest's dots say nothing about which cell is
booting, which is stuck and when it will end.  :class:`MatrixProgress` is a
pytest plugin that ``vhba-lab run`` installs in the controlling process
(with xdist, reports of every worker arrive there).  It replaces the dots:

* on a terminal, a table redrawn twice a second (rich ``Live``);
* otherwise (CI logs), plain timestamped lines: when a cell changes phase,
  at its first failure, every ``HEARTBEAT_S`` while it runs, and at its end.

A cell's phase comes from the ``cell.json`` its worker writes (queued until
that file exists, then booting, testing, broken or done), its counts from
the test reports, and its ETA from the last run's duration of the same cell
(``reports/latest``), or from its own pace when there is none.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rich.console import Console
from rich.live import Live
from rich.table import Table

from lab.build.debug_kernel import debug_series
from lab.cell.spec import CellSpec
from lab.errors import UsageError
from lab.run.records import test_name

HEARTBEAT_S = 60.0


@dataclass
class CellProgress:
    cell_id: str
    cell_dir: Path
    expected_s: float | None = None  # the same cell's duration in the last run
    total: int = 0
    done: int = 0
    failed: int = 0
    known: int = 0  # of the failures, those a known-failures entry lists for the cell
    started: float | None = None  # first seen booting
    ended: float | None = None
    state: str = "queued"  # cell.json's cell_state, once it exists
    cause: str | None = None  # why the cell is broken

    def refresh(self, now: float) -> None:
        """Read the worker's cell.json for the phase (cheap; it is a few hundred bytes)."""
        if self.ended is not None:
            return
        try:
            info = json.loads((self.cell_dir / "cell.json").read_text())
        except (OSError, ValueError):
            return
        if self.started is None:
            self.started = now
        self.state = str(info.get("cell_state") or "booting")
        loss = info.get("loss") or {}
        self.cause = info.get("broken") or (loss.get("cause") if loss else None)
        if info.get("state") in ("done", "error"):
            self.ended = now

    @property
    def phase(self) -> str:
        if self.ended is not None:
            return "broken" if self.state == "broken" else "done"
        if self.state == "ready" or (self.done and self.state != "broken"):
            return "testing"
        return self.state

    def elapsed(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or now) - self.started

    def eta(self, now: float, typical: float | None = None) -> float | None:
        """Seconds left: the last run's duration of this cell, else ``typical`` (how
        long this run's finished cells of its kind took), less the time elapsed;
        this cell's own pace when neither is known or it has already run longer."""
        if self.ended is not None:
            return 0.0
        expected = self.expected_s if self.expected_s is not None else typical
        if self.started is None:
            return expected
        elapsed = now - self.started
        if expected is not None and elapsed < expected:
            return expected - elapsed
        if self.done and self.total:
            return elapsed / self.done * (self.total - self.done)
        return None


def cell_of(nodeid: str, cells: Iterable[str]) -> str | None:
    """The cell a test id belongs to: ``test_x[6.12-ours-ours]`` or ``test_x[6.12-ours-ours-4]``.

    pytest-xdist's ``loadgroup`` (a run of several cells) appends ``@<group>``
    to every id: ``test_x[6.12-ours-ours]@6.12-ours-ours``.
    """
    if "]@" in nodeid:
        nodeid = nodeid[: nodeid.rindex("]@") + 1]
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    params = nodeid[nodeid.rindex("[") + 1 : -1]
    for cell in sorted(cells, key=len, reverse=True):
        if params == cell or params.startswith(cell + "-") or params.endswith("-" + cell):
            return cell
    return None


def _debug(cell_id: str) -> bool:
    """Whether a cell runs a debug kernel (``6.12-debug-ours-ours``)."""
    try:
        return debug_series(CellSpec.parse(cell_id).kernel) is not None
    except UsageError:
        return False


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _known(cell: CellProgress) -> str:
    """What follows the failure count: how many of them are listed as known."""
    return f" ({cell.known} known)" if cell.known else ""


def test_of(nodeid: str, cell_id: str) -> str:
    """The record name (``group/test[params]``) of a test id of ``cell_id``."""
    path, _, item = nodeid.partition("::")
    if "]@" in item:
        item = item[: item.rindex("]@") + 1]
    return test_name(Path(path).stem, item, cell_id)[1]


def status_line(cell: CellProgress, now: float, typical: float | None = None) -> str:
    """One cell's status in a line (the CI-log form)."""
    text = (
        f"{cell.cell_id}: {cell.phase}, {cell.done}/{cell.total or '?'} tests, "
        f"{cell.failed} failed{_known(cell)}, "
        f"{_clock(cell.elapsed(now))} elapsed"
    )
    if cell.ended is None:
        text += f", ETA {_clock(cell.eta(now, typical))}"
    if cell.phase == "broken" and cell.cause:
        text += f" ({cell.cause[:160]})"
    return text


@dataclass(eq=False)  # pytest keeps plugins in sets: identity hashing
class MatrixProgress:
    """The pytest plugin; ``expected`` maps cell ids to the last run's durations.

    ``listed(cell_id, test)`` says whether a known-failures entry lists that
    test for that cell: its failures are shown as known (the report decides,
    with the message, whether they really are).
    """

    cell_dirs: Mapping[str, Path]
    console: Console
    expected: Mapping[str, float] = field(default_factory=dict)
    live: bool | None = None  # None: a Live table exactly when the console is a terminal
    clock: Callable[[], float] = time.monotonic
    listed: Callable[[str, str], bool] = lambda cell_id, test: False
    cells: dict[str, CellProgress] = field(init=False)
    _seen: set[str] = field(default_factory=set, init=False)
    _said: dict[str, tuple[str, float]] = field(default_factory=dict, init=False)
    _live: Live | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.cells = {
            cid: CellProgress(cid, path, self.expected.get(cid))
            for cid, path in self.cell_dirs.items()
        }
        if self.live is None:
            self.live = self.console.is_terminal

    # -- counting --------------------------------------------------------------
    def _count(self, nodeids: Iterable[str]) -> None:
        totals = dict.fromkeys(self.cells, 0)
        for nodeid in nodeids:
            cell = cell_of(nodeid, self.cells)
            if cell is not None:
                totals[cell] += 1
        for cid, total in totals.items():
            self.cells[cid].total = total

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._count(item.nodeid for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        if not any(c.total for c in self.cells.values()):  # every worker collects the same
            self._count(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # One count per test: its call, or a set-up that did not get to the call.
        finished = report.when == "call" or (report.when == "setup" and not report.passed)
        cell = cell_of(report.nodeid, self.cells)
        if cell is None or report.nodeid in self._seen:
            return
        if finished or (report.when == "teardown" and report.failed):
            self._seen.add(report.nodeid)
            progress = self.cells[cell]
            known = report.failed and self.listed(cell, test_of(report.nodeid, cell))
            with self._lock:
                progress.done += 1
                if report.failed:
                    progress.failed += 1
                    progress.known += known
            if not self.live:
                self.tick(force_first_failure=report.failed and progress.failed == 1)

    def pytest_report_teststatus(self, report: pytest.TestReport) -> tuple[str, str, str] | None:
        """No dots: the progress display says more (categories stay for the summary)."""
        if report.when == "call" or (report.when == "setup" and report.skipped):
            return report.outcome, "", ""
        return None  # set-up/tear-down errors keep pytest's own "E"

    # -- showing ---------------------------------------------------------------
    def table(self) -> Table:
        now = self.clock()
        table = Table(title="vhba-lab run", expand=False)
        for column in ("cell", "phase", "tests", "failed", "elapsed", "ETA"):
            table.add_column(column)
        for cell in self.cells.values():
            cell.refresh(now)
            table.add_row(
                cell.cell_id, cell.phase, f"{cell.done}/{cell.total or '?'}",
                f"{cell.failed}{_known(cell)}", _clock(cell.elapsed(now)),
                "" if cell.ended is not None else _clock(cell.eta(now, self.typical(cell))),
            )  # fmt: skip
        return table

    def typical(self, cell: CellProgress) -> float | None:
        """The median time this run's finished cells of its kind took.

        Its kind: as many tests, and a debug kernel or not (a sanitizer kernel
        under TCG takes several times a plain one's time for the same tests).
        """
        took = [
            other.elapsed(0.0)
            for other in self.cells.values()
            if other.ended is not None
            and other.phase == "done"
            and other.total == cell.total
            and _debug(other.cell_id) == _debug(cell.cell_id)
        ]
        return statistics.median(took) if took else None

    def __rich__(self) -> Table:
        return self.table()

    def tick(self, force_first_failure: bool = False) -> None:
        """Print the lines that are due (non-terminal mode)."""
        now = self.clock()
        with self._lock:
            for cell in self.cells.values():
                cell.refresh(now)
                if cell.phase == "queued":
                    continue
                last = self._said.get(cell.cell_id)
                due = (
                    last is None
                    or last[0] != cell.phase
                    or (cell.ended is None and now - last[1] >= HEARTBEAT_S)
                    or force_first_failure
                )
                if due:
                    self._said[cell.cell_id] = (cell.phase, now)
                    self.console.print(
                        f"[{time.strftime('%H:%M:%S')}] "
                        f"{status_line(cell, now, self.typical(cell))}",
                        highlight=False, markup=False, soft_wrap=True,
                    )  # fmt: skip

    def start(self) -> None:
        if self.live:
            self._live = Live(self, console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
            return
        self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(5.0):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._live is not None:
            self._live.stop()
        else:
            self.tick()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.start()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.stop()
