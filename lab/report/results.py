"""The results model: one run, its cells, their tests, and how they are stored.

A run is what one ``vhba-lab`` invocation (or a merge of several) produced.
A cell is one (kernel, module, responder, accel) combination booted in one
guest; a cell has tests.  Everything the report writers need is in these
dataclasses, so junit.xml, summary.md and index.html can never disagree with
results.json: they are all rendered from the same :class:`Run`.

Statuses follow KCIDB's ordering so "worst of" is well defined, with one
status above it::

    sanitizer > fail > error > pass > known > skip

``sanitizer`` means a debug kernel's sanitizer (KASAN, UBSAN, lockdep,
kmemleak, ...) reported a bug while the test ran (see :mod:`lab.cell.sanitizers`):
the kernel itself proved a memory or locking bug, which is worse than a test
assertion; a known-failure entry masks it only when it names every report
and none faults in the module (a kernel bug of its own reached through the
module, :mod:`lab.report.known_failures`).  Such a test carries its
``findings``, each linking the report's text, KNOWN or not.

``error`` means the harness broke (boot timeout, guest panic outside a test,
lost ssh, infrastructure): the module's behaviour is unknown, so it is never
shown as a module bug.  ``known`` is a failure matched by an unexpired entry
of ``conformance/known-failures.toml`` (see :mod:`lab.report.known_failures`).

Artifact paths are always relative to the run directory, so a report
directory can be moved, archived or merged without breaking its links.

A test can also carry ``measurements`` (what it recorded with pytest's
``record_property``, e.g. a latency or a random seed): numbers and short
strings the report shows whatever the status, because a passing test's
numbers are how a slow drift or a reproducible random campaign is noticed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema

from lab.cell.sanitizers import Kind, headline
from lab.errors import LabError, UsageError
from lab.paths import repo_root

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
LATEST_LINK = "latest"

#: Canonical labels for cell-level artifacts, in display order.  The harness
#: should use these keys so the report can show "missing" for the ones it
#: failed to collect; any other label is shown after them.
CELL_ARTIFACTS: dict[str, str] = {
    "serial": "serial log",
    "build_log": "build log",
    "dmesg": "dmesg",
    "responder_log": "responder log",
    "cdb_trace": "CDB trace",
}

#: The test-level artifact the matrix badge links to, when present.
TEST_LOG = "log"

#: A string measurement longer than this is cut: measurements are one-line
#: facts for a report row, anything longer belongs in an artifact.
MAX_MEASUREMENT_CHARS = 200


class Status(str, Enum):
    """A KCIDB-style ordered verdict; compare with :attr:`severity`, not ``<``."""

    SANITIZER = "sanitizer"
    FAIL = "fail"
    ERROR = "error"
    PASS = "pass"
    KNOWN = "known"
    SKIP = "skip"

    @property
    def severity(self) -> int:
        """Higher is worse: sanitizer 5, fail 4, error 3, pass 2, known 1, skip 0."""
        return _SEVERITY[self]

    @property
    def label(self) -> str:
        """Upper-case text shown next to every colour, so colour is never the only cue."""
        return self.value.upper()

    @classmethod
    def worst(cls, statuses: Iterable[Status], default: Status | None = None) -> Status:
        """The most severe status; ``default`` (or SKIP) when there is none."""
        found = list(statuses)
        if not found:
            return default if default is not None else cls.SKIP
        return max(found, key=lambda s: s.severity)


_SEVERITY = {
    Status.SANITIZER: 5,
    Status.FAIL: 4,
    Status.ERROR: 3,
    Status.PASS: 2,
    Status.KNOWN: 1,
    Status.SKIP: 0,
}

#: Statuses that say the module (or the kernel running it) is wrong: red in
#: every report, exit code 1, listed with their reproducer.
BAD = (Status.SANITIZER, Status.FAIL)


@dataclass(frozen=True)
class SanitizerFinding:
    """One sanitizer report a test triggered: what found it, its first line, its text file.

    The report text itself stays in the artifact file (it can be long); the
    record keeps what a matrix badge and a junit message need.
    """

    kind: Kind
    title: str
    artifact: str  # path under the run dir, also listed in the test's artifacts

    @property
    def label(self) -> str:
        return self.kind.label

    @property
    def headline(self) -> str:
        return headline(self.kind, self.title)


@dataclass
class TestResult:
    """One conformance test in one cell."""

    __test__ = False  # not a pytest test class, despite the name

    name: str  # "spc/test_inquiry_standard"
    group: str  # "spc"
    status: Status
    duration_s: float = 0.0
    message: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # label -> path under run dir
    known_failure: dict[str, Any] | None = None  # the matching known-failures entry
    findings: list[SanitizerFinding] = field(default_factory=list)  # status SANITIZER
    # name -> value the test recorded (pytest record_property), shown whatever the status
    measurements: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def kinds(self) -> list[Kind]:
        """The sanitizer kinds this test's findings name, first-seen order, once each."""
        return list(dict.fromkeys(f.kind for f in self.findings))


def clean_measurements(pairs: Iterable[object]) -> dict[str, float | int | str]:
    """The reportable ``(name, value)`` pairs of ``item.user_properties``, as a dict.

    pytest lets a test record anything, but results.json only holds what every
    report can print and JSON can carry: ints, floats and strings.  Booleans
    (an ``int`` to Python, not a number to the schema) and other objects are
    dropped rather than stringified, so a report never shows a ``repr`` nobody
    asked for.  A non-finite float becomes its text ("inf", "nan") because
    strict JSON has no such numbers, yet a timeout's ``inf`` is still worth
    showing.  Strings are made one line and cut at :data:`MAX_MEASUREMENT_CHARS`.
    A name recorded twice keeps its last value, as a later measurement would.
    """
    found: dict[str, float | int | str] = {}
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            continue
        name, value = pair
        if not isinstance(name, str) or not name or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        if isinstance(value, str):
            found[name] = " ".join(value.split())[:MAX_MEASUREMENT_CHARS]
        elif isinstance(value, (int, float)):
            found[name] = value
    return found


def format_measurement(name: str, value: float | int | str) -> str:
    """``name = value``, the one form every report shows a measurement in."""
    return f"{name} = {value}"


def format_measurements(measurements: Mapping[str, float | int | str]) -> str:
    """All of a test's measurements on one line, in the order it recorded them."""
    return ", ".join(format_measurement(k, v) for k, v in measurements.items())


def narrow_to_test(command: str, test: str) -> str:
    """``command`` (a ``vhba-lab run``) limited to ``test``, e.g. "spc/test_x[a]" -> "-k test_x".

    ``-k`` gets the test function's name: its parameters cannot be written in
    a ``-k`` expression, so a parametrised test reruns with all of them.
    """
    function = test.split("/", 1)[-1].split("[", 1)[0]
    return f"{command} -k {shlex.quote(function)}"


@dataclass
class Cell:
    """One guest: a kernel with one module build and one responder.

    ``status`` is the harness's verdict on the cell itself (build, boot,
    module load, responder start): ``pass`` when all of that worked,
    ``error`` when the harness broke, ``fail`` when the module under test did
    (e.g. it does not compile for this kernel).  Tests can only make a cell
    worse, so reports use :attr:`overall`.
    """

    cell_id: str  # "6.12-ours-ours"
    kernel: dict[str, str]  # series, version, abi, release
    module: str  # "ours" | "upstream"
    responder: str  # "ours" | "cdemu"
    accel: str  # "kvm" | "tcg"
    status: Status = Status.PASS
    duration_s: float = 0.0
    tests: list[TestResult] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    reproducer: str = ""
    message: str | None = None
    origin: str | None = None  # run id this cell came from, set by merge_runs
    # Which module source the cell built and what came out (kind, path, git commit
    # and describe for a --module tree, ko_sha256): lab.cell.env writes it.
    module_provenance: dict[str, str] = field(default_factory=dict)
    # Boots that failed before ssh and were tried again (infrastructure, not a
    # verdict), one line each with the cause and the serial log kept.
    boot_retries: list[str] = field(default_factory=list)

    @property
    def overall(self) -> Status:
        """Worst of the cell's own status and its tests' statuses."""
        return Status.worst([self.status, *(t.status for t in self.tests)])

    @property
    def series_key(self) -> tuple[int, ...]:
        """Kernel series as numbers, so 6.12 sorts after 6.9 and 3.16 after 3.2."""
        parts = []
        for piece in self.kernel.get("series", "").split("."):
            parts.append(int(piece) if piece.isdigit() else -1)
        return tuple(parts)

    def all_artifacts(self) -> Iterator[str]:
        """Every artifact path the cell and its tests refer to."""
        yield from self.artifacts.values()
        for test in self.tests:
            yield from test.artifacts.values()
            yield from (f.artifact for f in test.findings)

    @property
    def findings(self) -> list[SanitizerFinding]:
        """Every sanitizer finding of the cell's tests, in test order."""
        return [f for test in self.tests for f in test.findings]

    def reproducer_for(self, test: str) -> str:
        """The cell's reproducer narrowed to ``test`` ("" if the cell has none)."""
        return narrow_to_test(self.reproducer, test) if self.reproducer else ""


@dataclass
class Run:
    """A whole matrix run (or a merge of several)."""

    run_id: str
    started: datetime
    finished: datetime
    host: dict[str, str]  # hostname, qemu_version, python, lab_commit
    cells: list[Cell] = field(default_factory=list)
    merged_from: list[dict[str, Any]] = field(default_factory=list)  # [{run_id, host}]

    @property
    def status(self) -> Status:
        """Worst cell; a run without cells is an ERROR (results are missing)."""
        return Status.worst((c.overall for c in self.cells), default=Status.ERROR)

    @property
    def exit_code(self) -> int:
        """The process exit code for this run; see :meth:`verdict`."""
        return self.verdict()[0]

    def verdict(self) -> tuple[int, str]:
        """Exit code and the reason for it.

        0: every test passed, was a known failure, or was skipped;
        1: any SANITIZER or FAIL — a module bug wins over harness trouble,
           because it is the actionable signal and KCIDB orders it first (ERROR
           cells are still listed in every report);
        2: any ERROR, or no test ran at all (no cells, or all skipped): missing
           results must not look green (TuxRun's rule);
        3: reserved for usage errors (:class:`lab.errors.UsageError`), never
           produced here.
        """
        if not self.cells:
            return 2, "no cells ran: results are missing"
        statuses = [c.overall for c in self.cells]
        if Status.SANITIZER in statuses or Status.FAIL in statuses:
            reasons = []
            if Status.SANITIZER in statuses:
                n = statuses.count(Status.SANITIZER)
                reasons.append(f"{n} cell(s) with kernel sanitizer findings")
            if Status.FAIL in statuses:
                reasons.append(f"{statuses.count(Status.FAIL)} cell(s) failed")
            return 1, ", ".join(reasons)
        if Status.ERROR in statuses:
            n = statuses.count(Status.ERROR)
            return 2, f"{n} cell(s) hit a harness error (not a module verdict)"
        ran = [t for c in self.cells for t in c.tests if t.status is not Status.SKIP]
        if not ran:
            return 2, "every test was skipped: nothing was verified"
        return 0, "all tests passed, were known failures, or were skipped"

    def counts(self) -> dict[Status, int]:
        """Number of test results per status, over all cells."""
        totals = {s: 0 for s in Status}
        for cell in self.cells:
            for test in cell.tests:
                totals[test.status] += 1
        return totals

    def sorted_cells(self) -> list[Cell]:
        """Cells in matrix order: kernel series numerically, then module, responder, accel."""
        return sorted(
            self.cells,
            key=lambda c: (c.series_key, c.module, c.responder, c.accel, c.cell_id),
        )

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.cell_id == cell_id:
                return c
        raise KeyError(cell_id)

    # -- JSON -------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A plain dict matching ``schemas/results.schema.json``.

        ``status``, ``exit_code`` and each cell's ``overall`` are derived and
        written for readers (jq, CI); :meth:`from_json` recomputes them.
        """
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "host": dict(self.host),
            "merged_from": [dict(m) for m in self.merged_from],
            "status": self.status.value,
            "exit_code": self.exit_code,
            "cells": [_cell_to_json(c) for c in self.cells],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "results.json") -> Run:
        """Build a Run from a dict, validating it against the schema first."""
        validate(data, source)
        return cls(
            run_id=data["run_id"],
            started=_parse_time(data["started"]),
            finished=_parse_time(data["finished"]),
            host=dict(data["host"]),
            cells=[_cell_from_json(c) for c in data["cells"]],
            merged_from=[dict(m) for m in data.get("merged_from", [])],
        )


def _cell_to_json(cell: Cell) -> dict[str, Any]:
    return {
        "cell_id": cell.cell_id,
        "kernel": dict(cell.kernel),
        "module": cell.module,
        "responder": cell.responder,
        "accel": cell.accel,
        "status": cell.status.value,
        "overall": cell.overall.value,
        "duration_s": cell.duration_s,
        "reproducer": cell.reproducer,
        "message": cell.message,
        "origin": cell.origin,
        "module_provenance": dict(cell.module_provenance),
        "boot_retries": list(cell.boot_retries),
        "artifacts": dict(cell.artifacts),
        "tests": [
            {
                "name": t.name,
                "group": t.group,
                "status": t.status.value,
                "duration_s": t.duration_s,
                "message": t.message,
                "artifacts": dict(t.artifacts),
                "known_failure": dict(t.known_failure) if t.known_failure else None,
                "findings": [
                    {"kind": f.kind.value, "title": f.title, "artifact": f.artifact}
                    for f in t.findings
                ],
                "measurements": dict(t.measurements),
            }
            for t in cell.tests
        ],
    }


def _cell_from_json(data: dict[str, Any]) -> Cell:
    return Cell(
        cell_id=data["cell_id"],
        kernel=dict(data["kernel"]),
        module=data["module"],
        responder=data["responder"],
        accel=data["accel"],
        status=Status(data["status"]),
        duration_s=float(data["duration_s"]),
        reproducer=data["reproducer"],
        message=data.get("message"),
        origin=data.get("origin"),
        module_provenance=dict(data.get("module_provenance") or {}),  # absent in older runs
        boot_retries=list(data.get("boot_retries") or []),  # absent in older runs
        artifacts=dict(data["artifacts"]),
        tests=[
            TestResult(
                name=t["name"],
                group=t["group"],
                status=Status(t["status"]),
                duration_s=float(t["duration_s"]),
                message=t.get("message"),
                artifacts=dict(t["artifacts"]),
                known_failure=dict(t["known_failure"]) if t.get("known_failure") else None,
                findings=[
                    SanitizerFinding(Kind(f["kind"]), f["title"], f["artifact"])
                    for f in t.get("findings", [])
                ],
                # results.json written before measurements existed has none
                measurements=dict(t.get("measurements", {})),
            )
            for t in data["tests"]
        ],
    )


def _parse_time(text: str) -> datetime:
    # Python 3.9's fromisoformat does not accept a trailing "Z".
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# -- schema ---------------------------------------------------------------


def schema_path() -> Path:
    return repo_root() / "schemas" / "results.schema.json"


def load_schema() -> dict[str, Any]:
    path = schema_path()
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabError(
            f"cannot read the results schema {path}: {exc}; restore it from git"
        ) from exc


def validate(data: dict[str, Any], source: str = "results.json") -> None:
    """Raise LabError listing where ``data`` breaks the schema (first five problems)."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    lines = []
    for err in errors[:5]:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        lines.append(f"  at {where}: {err.message}")
    more = f"\n  ... and {len(errors) - 5} more" if len(errors) > 5 else ""
    raise LabError(
        f"{source} does not match {schema_path().name}:\n"
        + "\n".join(lines)
        + more
        + "\nfix the writer that produced it, or regenerate it with this lab version"
    )


# -- files ----------------------------------------------------------------


def write_run(run: Run, run_dir: Path) -> Path:
    """Write ``run_dir/results.json`` after validating it; returns the path."""
    data = run.to_json()
    validate(data, f"results for run {run.run_id}")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # readers never see a half-written file
    return path


def load_run(path: Path) -> Run:
    """Load a run from ``results.json`` or from the run directory holding it."""
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(
            f"{path} does not exist: pass a run directory (reports/<run-id>) or its results.json"
        ) from exc
    except ValueError as exc:
        raise LabError(f"{path} is not valid JSON ({exc}); re-run or restore it") from exc
    if not isinstance(data, dict):
        raise LabError(f"{path} holds a JSON {type(data).__name__}, not a run object")
    return Run.from_json(data, str(path))


# -- comparison -----------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """One test whose status changed between two runs."""

    cell_id: str
    test: str
    before: Status
    after: Status


def _transitions(
    prev: Run, cur: Run, before: tuple[Status, ...], after: tuple[Status, ...]
) -> list[Transition]:
    old = {(c.cell_id, t.name): t.status for c in prev.cells for t in c.tests}
    found = []
    for cell in cur.sorted_cells():
        for test in cell.tests:
            was = old.get((cell.cell_id, test.name))
            if was in before and test.status in after:
                assert was is not None
                found.append(Transition(cell.cell_id, test.name, was, test.status))
    return found


def regressions(prev: Run, cur: Run) -> list[Transition]:
    """Tests that PASSed in ``prev`` and FAIL or SANITIZER in ``cur`` (same cell id and name)."""
    return _transitions(prev, cur, (Status.PASS,), BAD)


def fixes(prev: Run, cur: Run) -> list[Transition]:
    """Tests that FAILed (or hit a sanitizer) in ``prev`` and PASS in ``cur``."""
    return _transitions(prev, cur, BAD, (Status.PASS,))


# -- artifact helpers -----------------------------------------------------


def artifact_file(run_dir: Path, rel: str) -> Path | None:
    """The artifact's path if it exists inside ``run_dir``, else None.

    Used so reports only ever link to files that are really there.
    """
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        return None
    path = run_dir.joinpath(*pure.parts)
    return path if path.exists() else None
