"""Real matrix cells end to end: vhba-lab run -> report, and a broken drive turns red."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lab.cells import REFERENCE_KERNEL
from lab.results import load_run

pytestmark = pytest.mark.integration
VHBA_LAB = [sys.executable, "-m", "lab.cli"]
CELLS = [f"{REFERENCE_KERNEL}-ours-ours", f"{REFERENCE_KERNEL}-ours-cdemu",
         f"{REFERENCE_KERNEL}-upstream-ours"]  # fmt: skip


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href and not href.startswith(("#", "http")):
            self.hrefs.append(href)


def _run(reports: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [*VHBA_LAB, "run", "--quick", "-n", "2", "--reports", str(reports), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=3000)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    reports = tmp_path_factory.mktemp("reports")
    args = [arg for cell in CELLS for arg in ("--cell", cell)]
    out = _run(reports, *args)
    return reports, out.returncode, out.stdout + out.stderr


def test_reference_cells_are_green(reference_run: tuple[Path, int, str]) -> None:
    reports, rc, output = reference_run
    run = load_run(reports / "latest")
    bad = [
        f"{cell.cell_id} {t.name}: {t.status.value}: {t.message}"
        for cell in run.cells for t in cell.tests if t.status.value in ("fail", "error")
    ]  # fmt: skip
    assert rc == 0, "\n".join(bad) or output[-3000:]
    assert sorted(c.cell_id for c in run.cells) == sorted(CELLS)
    for cell in run.cells:
        assert cell.tests, f"{cell.cell_id} ran no test"
        assert any(t.status.value == "pass" for t in cell.tests)


def test_report_files_exist_and_links_resolve(reference_run: tuple[Path, int, str]) -> None:
    run_dir = reference_run[0] / "latest"
    for name in ("results.json", "junit.xml", "summary.md", "index.html"):
        assert (run_dir / name).is_file(), name
    json.loads((run_dir / "results.json").read_text())
    parser = _Links()
    parser.feed((run_dir / "index.html").read_text())
    assert parser.hrefs, "the matrix links to no artifact"
    missing = [h for h in parser.hrefs if not (run_dir / h).exists()]
    assert not missing, missing


def test_wrong_capacity_turns_the_cell_red_with_a_reproducer(tmp_path: Path) -> None:
    cell = f"{REFERENCE_KERNEL}-ours-ours"
    out = _run(tmp_path, "--cell", cell, "--responder-fault", "capacity:blocks=1000",
               "-k", "block or differential")  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    run = load_run(tmp_path / "latest")
    (result,) = run.cells
    failed = [t for t in result.tests if t.status.value == "fail"]
    assert failed, "a drive that lies about its capacity went unnoticed"
    assert any("size" in (t.message or "").lower() or "capacity" in (t.message or "").lower()
               for t in failed), [t.message for t in failed]  # fmt: skip
    assert result.reproducer.startswith(f"vhba-lab run --cell {cell}")
    assert "--responder-fault capacity:blocks=1000" in result.reproducer
