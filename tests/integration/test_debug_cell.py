"""The debug kernel row: a sanitizer kernel runs a cell and names a use-after-free or leak it sees.

Building 6.12-debug takes 30-65 min on this kind of machine (docs/debug-kernels.md),
more than a CI run can spend, so these run wherever the debug kernel is already
cached (``vhba-lab debug-kernel build``) and say so when it is not.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.context import LabContext
from lab.report.results import TestResult, load_run

pytestmark = pytest.mark.integration
VHBA_LAB = [sys.executable, "-m", "lab.cli"]
CELL = "6.12-debug-ours-ours"
TEST = "test_stop_removes_device_then_rmmod_and_reload"


@pytest.fixture(scope="module")
def debug_kernel_cached(lab: LabContext) -> None:
    if lab.debug_kernels.cached(lab.debug_spec("6.12-debug")) is None:
        pytest.skip("the 6.12-debug kernel is not cached here: 'vhba-lab debug-kernel build' "
                    "(30-65 min) makes it, and these tests run from then on")  # fmt: skip


# The groups a release gate most needs a sanitizer kernel for: hostile responders
# and backings, device lifetimes, dying responders, reads the module serves itself.
GROUPS = "attacker or lifecycle or robustness or direct_reads"


def _run(reports: Path, *extra: str, keyword: str = TEST) -> subprocess.CompletedProcess[str]:
    cmd = [*VHBA_LAB, "run", "--cell", CELL, "-k", keyword, "--reports", str(reports), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=5400)


def test_the_hostile_and_lifetime_groups_pass_under_the_sanitizers(
    debug_kernel_cached: None, tmp_path: Path, note_boot_retries: Callable[[Path], None]
) -> None:
    out = _run(tmp_path, keyword=GROUPS)
    note_boot_retries(tmp_path)
    (cell,) = load_run(tmp_path / "latest").cells
    bad = [f"{t.name}: {t.status.value}: {t.message}" for t in cell.tests
           if t.status.value not in ("pass", "skip", "known")]  # fmt: skip
    assert out.returncode == 0 and not bad, "\n".join(bad) or out.stdout[-3000:]
    groups = {t.name.split("/", 1)[0] for t in cell.tests}
    assert groups >= {"attacker", "lifecycle", "robustness", "direct_reads"}, groups


def test_our_module_is_clean_under_kasan_lockdep_and_kmemleak(
    debug_kernel_cached: None, tmp_path: Path, note_boot_retries: Callable[[Path], None]
) -> None:
    out = _run(tmp_path)
    note_boot_retries(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    (cell,) = load_run(tmp_path / "latest").cells
    (test,) = cell.tests
    assert test.status.value == "pass" and not test.findings
    assert cell.kernel["abi"].endswith("-debug")


def _faulty_run(
    tmp_path: Path, fault: str, note_boot_retries: Callable[[Path], None]
) -> TestResult:
    """The one test run with our module built with ``fault``: a red cell (exit 1)."""
    out = _run(tmp_path, "--module-fault", fault)
    note_boot_retries(tmp_path)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    (cell,) = load_run(tmp_path / "latest").cells
    (test,) = cell.tests
    assert cell.overall.value == "sanitizer" and test.status.value == "sanitizer", (
        f"{test.status.value}: {test.message}"
    )
    return test


def test_an_injected_use_after_free_is_a_sanitizer_verdict_with_its_report(
    debug_kernel_cached: None, tmp_path: Path, note_boot_retries: Callable[[Path], None]
) -> None:
    test = _faulty_run(tmp_path, "uaf", note_boot_retries)
    (finding,) = [f for f in test.findings if f.kind.value == "kasan"]
    assert "use-after-free in vhba_ctl_release" in finding.title
    report = (tmp_path / "latest" / finding.artifact).read_text()
    assert "BUG: KASAN" in report
    assert ">KASAN</a>" in (tmp_path / "latest" / "index.html").read_text()


def test_an_injected_leak_is_a_kmemleak_verdict_with_its_report(
    debug_kernel_cached: None, tmp_path: Path, note_boot_retries: Callable[[Path], None]
) -> None:
    test = _faulty_run(tmp_path, "leak", note_boot_retries)
    leaks = [f for f in test.findings if f.kind.value == "kmemleak"]
    assert leaks, test.findings
    reports = [(tmp_path / "latest" / f.artifact).read_text() for f in leaks]
    # the device each close leaves behind, allocated where /dev/vhba_ctl is opened
    assert any("vhba_ctl_open" in text for text in reports), reports[0]
