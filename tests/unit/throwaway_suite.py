"""Running the real conformance conftest over a throw-away suite, for flow tests.

The record a test leaves in tests.jsonl is written by conformance/conftest.py;
tests of what reaches the reports run that very file over a tiny suite whose
cell never boots, instead of re-implementing it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from lab.cell.spec import REFERENCE_KERNEL
from lab.paths import repo_root

CELL = f"{REFERENCE_KERNEL}-ours-ours"


def run_suite(root: Path, test_source: str, more: dict[str, str] | None = None) -> Path:
    """Run ``test_source`` as a suite under the real conftest; its run directory.

    ``more`` are further test files (name -> source), run after it.  The suites
    used here always hold a failing test, so pytest must exit 1.
    """
    suite = root / "suite"
    suite.mkdir()
    shutil.copy(repo_root() / "conformance" / "conftest.py", suite / "conftest.py")
    (suite / "test_01_demo.py").write_text(test_source)
    for name, source in (more or {}).items():
        (suite / name).write_text(source)
    run_dir = root / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "--lab-run-dir", str(run_dir), "-q",
         "-p", "no:cacheprovider", "-p", "no:xdist", "--rootdir", str(suite)],
        capture_output=True, text=True, cwd=repo_root(), timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


def rows(run_dir: Path) -> dict[str, dict]:
    """The suite's tests.jsonl records, by test name."""
    lines = (run_dir / "cells" / CELL / "tests.jsonl").read_text().splitlines()
    return {row["name"]: row for row in map(json.loads, lines)}
