"""The per-test records a cell's worker writes and the runner reads: ``<cell>/tests.jsonl``.

One JSON line per test, appended by the conformance plugin
(``conformance/conftest.py``) in the worker that ran the test, read back by
``vhba-lab run`` (:mod:`lab.run.runner`) to build the cell's results.  Both
sides go through :class:`TestRecord`, so the format has one definition.
Artifact paths in a record are relative to the cell directory; the results
make them relative to the run directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.cell.sanitizers import Kind
from lab.report.results import SanitizerFinding, Status, TestResult, clean_measurements

RECORDS_FILE = "tests.jsonl"


def test_name(module: str, item_name: str, cell_id: str | None) -> tuple[str, str]:
    """(group, name) of a conformance test: ``test_04_mmc``, ``test_read_toc[msf-6.12-ours-ours]``
    give ``("mmc", "mmc/test_read_toc[msf]")``.

    The cell's id is dropped (the cell is the record's context); the test's own
    parameters stay, so each case keeps its own record and artifact directory.
    """
    group = module.removeprefix("test_").lstrip("0123456789_") or module
    name, _, params = item_name.partition("[")
    params = params.removesuffix("]")
    if cell_id:
        params = params.replace(cell_id, "")
    params = "-".join(part for part in params.split("-") if part)
    return group, f"{group}/{name}[{params}]" if params else f"{group}/{name}"


test_name.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name


@dataclass(frozen=True)
class TestRecord:
    __test__ = False  # not a pytest test class, despite the name

    name: str  # "spc/test_inquiry_standard"
    group: str
    status: str  # a lab.report.results.Status value
    duration_s: float
    message: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # label -> path under the cell
    findings: list[dict[str, str]] = field(default_factory=list)  # kind, title, artifact
    measurements: dict[str, Any] = field(default_factory=dict)
    finished: float = 0.0  # time.time() when the record was written

    def to_line(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_line(cls, line: str) -> TestRecord:
        row = json.loads(line)
        return cls(
            name=row["name"], group=row["group"], status=row["status"],
            duration_s=float(row["duration_s"]), message=row.get("message"),
            artifacts=dict(row.get("artifacts") or {}), findings=list(row.get("findings") or []),
            # rows from before measurements existed have none
            measurements=dict(row.get("measurements") or {}), finished=row.get("finished", 0.0),
        )  # fmt: skip

    def result(self, prefix: str) -> TestResult:
        """The test's result, artifact paths made relative to the run (``prefix``: cells/ID)."""
        return TestResult(
            name=self.name, group=self.group, status=Status(self.status),
            duration_s=self.duration_s, message=self.message,
            artifacts={k: f"{prefix}/{v}" for k, v in self.artifacts.items()},
            findings=[SanitizerFinding(Kind(f["kind"]), f["title"], f"{prefix}/{f['artifact']}")
                      for f in self.findings],
            # cleaning again means one odd value can never make results.json fail its schema
            measurements=clean_measurements(self.measurements.items()),
        )  # fmt: skip


def append(cell_dir: Path, record: TestRecord) -> None:
    cell_dir.mkdir(parents=True, exist_ok=True)
    with (cell_dir / RECORDS_FILE).open("a") as fh:
        fh.write(record.to_line() + "\n")


def load(cell_dir: Path) -> list[TestRecord]:
    path = cell_dir / RECORDS_FILE
    if not path.exists():
        return []
    return [TestRecord.from_line(line) for line in path.read_text().splitlines() if line.strip()]
