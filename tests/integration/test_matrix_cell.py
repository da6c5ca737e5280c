"""Real matrix cells end to end: vhba-lab run -> report, and a broken drive turns red."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from lab.build.images import Image
from lab.cell.spec import REFERENCE_KERNEL
from lab.report.results import load_run

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


def _run(reports: Path, *extra: str, quick: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [*VHBA_LAB, "run", *(["--quick"] if quick else []), "-n", "2",
           "--reports", str(reports), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=3000)


@pytest.fixture(scope="module")
def reference_run(
    tmp_path_factory: pytest.TempPathFactory, note_boot_retries: Callable[[Path], None]
) -> tuple[Path, int, str]:
    reports = tmp_path_factory.mktemp("reports")
    args = [arg for cell in CELLS for arg in ("--cell", cell)]
    out = _run(reports, *args, quick=False)  # CI gates on full cells: the slow tests too
    note_boot_retries(reports)
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
    # hrefs are percent-encoded (a parametrized test's directory holds '[' and ']')
    missing = [h for h in parser.hrefs if not (run_dir / unquote(h)).exists()]
    assert not missing, missing


def test_wrong_capacity_turns_the_cell_red_with_a_reproducer(
    tmp_path: Path, note_boot_retries: Callable[[Path], None]
) -> None:
    cell = f"{REFERENCE_KERNEL}-ours-ours"
    out = _run(tmp_path, "--cell", cell, "--responder-fault", "capacity:blocks=1000",
               "-k", "block or differential")  # fmt: skip
    note_boot_retries(tmp_path)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    run = load_run(tmp_path / "latest")
    (result,) = run.cells
    failed = [t for t in result.tests if t.status.value == "fail"]
    assert failed, "a drive that lies about its capacity went unnoticed"
    assert any("size" in (t.message or "").lower() or "capacity" in (t.message or "").lower()
               for t in failed), [t.message for t in failed]  # fmt: skip
    assert result.reproducer.startswith(f"vhba-lab run --cell {cell}")
    assert "--responder-fault capacity:blocks=1000" in result.reproducer


def _qemu_pids(path_part: str) -> list[int]:
    """QEMU processes whose command line names ``path_part`` (a cell's directory)."""
    out = subprocess.run(["pgrep", "-f", f"qemu-system.*{path_part}"], capture_output=True,
                         text=True, check=False)  # fmt: skip
    return [int(pid) for pid in out.stdout.split()]


def test_a_boot_that_keeps_panicking_is_one_error_with_both_serial_logs(tmp_path: Path) -> None:
    cell = f"{REFERENCE_KERNEL}-ours-ours"
    out = _run(tmp_path, "--cell", cell, "--boot-fault", "panic", "-k", "spc")
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-2000:]
    run = load_run(tmp_path / "latest")
    (result,) = run.cells
    assert result.overall.value == "error"
    assert "BOOT: the guest failed to come up twice" in (result.message or "")
    errors = [t for t in result.tests if t.status.value == "error"]
    assert len(errors) == 1, [(t.name, t.status.value, t.message) for t in result.tests]
    assert all(t.status.value in ("error", "skip") for t in result.tests)
    skipped = [t for t in result.tests if t.status.value == "skip"]
    assert skipped and all("cell broken: BOOT:" in (t.message or "") for t in skipped)
    assert {"serial", "serial_attempt1"} <= set(result.artifacts), result.artifacts
    for label in ("serial", "serial_attempt1"):
        text = (tmp_path / "latest" / result.artifacts[label]).read_text(errors="replace")
        assert "Kernel panic" in text, label
    assert "--boot-fault panic" in result.reproducer


def _act_at_third_test(tmp_path: Path, act: Callable[[subprocess.Popen[str], Path], bool]) -> str:
    """Run the reference cell's spc and mmc tests into ``tmp_path``; once its third
    test is recorded, call ``act(run process, cell directory)`` (which says whether
    it acted), let the run end, and return its output."""
    cell = f"{REFERENCE_KERNEL}-ours-ours"
    cmd = [*VHBA_LAB, "run", "--quick", "--reports", str(tmp_path), "--cell", cell,
           "-k", "spc or mmc"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    acted = False
    try:
        deadline = time.monotonic() + 1500
        while time.monotonic() < deadline and proc.poll() is None:
            records = list(tmp_path.glob(f"*/cells/{cell}/tests.jsonl"))
            if records and len(records[0].read_text().splitlines()) >= 3:
                acted = act(proc, records[0].parent)
                break
            time.sleep(0.5)
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert acted, f"the cell never got to its third test:\n{output[-3000:]}"
    assert proc.returncode == 2, output[-3000:]
    return output


def test_a_guest_killed_mid_cell_is_one_error_the_rest_skip_and_no_qemu_is_left(
    tmp_path: Path,
) -> None:
    def kill_qemu(proc: subprocess.Popen[str], cell_dir: Path) -> bool:
        killed = _qemu_pids(str(cell_dir))
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        return bool(killed)

    _act_at_third_test(tmp_path, kill_qemu)
    run = load_run(tmp_path / "latest")
    (result,) = run.cells
    errors = [t for t in result.tests if t.status.value == "error"]
    assert len(errors) == 1, [(t.name, t.status.value, t.message) for t in result.tests]
    (error,) = errors
    assert error.message is not None and "QEMU-EXIT: QEMU exited (signal 9)" in error.message
    assert not [t for t in result.tests if t.status.value == "fail"]
    later = result.tests[result.tests.index(error) + 1 :]
    assert later and all(t.status.value == "skip" for t in later)
    assert result.overall.value == "error" and "QEMU-EXIT" in (result.message or "")
    assert "serial" in result.artifacts
    assert not _qemu_pids(str(tmp_path)), "a QEMU of the broken cell is still running"


def test_a_run_stopped_by_sigterm_reports_what_ran_and_leaves_no_qemu(tmp_path: Path) -> None:
    """A CI engine cancels a job with SIGTERM to the run's own process: the run
    writes its report (the cut cell an ERROR, never a pass) and stops its guests."""

    def terminate(proc: subprocess.Popen[str], cell_dir: Path) -> bool:
        proc.send_signal(signal.SIGTERM)
        return True

    output = _act_at_third_test(tmp_path, terminate)
    assert "run interrupted: reporting what ran" in output, output[-3000:]
    run = load_run(tmp_path / "latest")
    (result,) = run.cells
    assert result.overall.value == "error", (result.overall, result.message)
    assert result.message is not None and result.message.startswith("unfinished: ")
    assert "(the run was interrupted)" in result.message
    assert result.tests and not [t for t in result.tests if t.status.value == "fail"]
    assert (tmp_path / "latest" / "index.html").exists()
    assert not _qemu_pids(str(tmp_path)), "a QEMU of the stopped cell is still running"


def test_cells_run_apart_and_merged_equal_one_joint_run(tmp_path: Path) -> None:
    """What the CI engines do (one job per cell, then merge) gives the joint run's verdicts."""
    cells = [f"{REFERENCE_KERNEL}-ours-ours", f"{REFERENCE_KERNEL}-ours-cdemu"]
    keyword = ["-k", "test_inquiry_standard or test_read_capacity or test_vpd_unit_serial"]
    joint = _run(tmp_path / "joint", *[a for c in cells for a in ("--cell", c)], *keyword)
    apart = [_run(tmp_path / c, "--cell", c, *keyword) for c in cells]
    merged_dir = tmp_path / "merged"
    run_dirs = [next(p for p in (tmp_path / c).iterdir() if p.name != "latest") for c in cells]
    merge_cmd = [*VHBA_LAB, "report", "merge", *map(str, run_dirs), "--out", str(merged_dir)]
    merge = subprocess.run(merge_cmd, capture_output=True, text=True, timeout=300)

    def verdicts(run_dir: Path) -> dict[str, tuple[str, dict[str, str]]]:
        run = load_run(run_dir)
        return {c.cell_id: (c.overall.value, {t.name: t.status.value for t in c.tests})
                for c in run.cells}  # fmt: skip

    assert verdicts(merged_dir) == verdicts(tmp_path / "joint" / "latest")
    assert sorted(verdicts(merged_dir)) == sorted(cells)
    assert merge.returncode == joint.returncode == max(p.returncode for p in apart), (
        merge.stderr[-2000:] + joint.stdout[-2000:]
    )


def _debian_vhba_copy(reference_image: Image, dest: Path) -> Path:
    """Debian's vhba-dkms source (in every image) copied out as a plain directory."""
    (src,) = sorted((reference_image.tree / "opt/vhba-upstream/usr/src").glob("vhba-*"))
    return Path(shutil.copytree(src, dest / src.name))


def test_a_module_tree_given_by_path_is_a_cell_of_its_own_with_provenance(
    tmp_path: Path, reference_image: Image
) -> None:
    tree = _debian_vhba_copy(reference_image, tmp_path / "src")
    out = _run(tmp_path / "r", "--module", str(tree), "--kernels", REFERENCE_KERNEL,
               "-k", "build or attach or spc")  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    (cell,) = load_run(tmp_path / "r" / "latest").cells
    assert cell.cell_id == f"{REFERENCE_KERNEL}-vhba-ours" and cell.module == "vhba"
    assert any(t.name == "build/test_module_builds" and t.status.value == "pass"
               for t in cell.tests)  # fmt: skip
    info = cell.module_provenance
    assert info["path"] == str(tree) and len(info["ko_sha256"]) == 64, info
    assert f"--module {tree}" in cell.reproducer
    assert "ko " + info["ko_sha256"][:12] in (tmp_path / "r" / "latest" / "index.html").read_text()


def test_a_module_tree_missing_an_api_guard_is_red_with_the_compiler_error(
    tmp_path: Path, reference_image: Image
) -> None:
    tree = _debian_vhba_copy(reference_image, tmp_path / "src")
    source = tree / "vhba.c"
    # Remove the 5.16 guard: the tree now calls cmd->scsi_done(), gone since 5.16.
    text = source.read_text()
    assert "KERNEL_VERSION(5, 16, 0)" in text
    source.write_text(text.replace("KERNEL_VERSION(5, 16, 0)", "KERNEL_VERSION(99, 0, 0)"))
    out = _run(tmp_path / "r", "--module", str(tree), "--module-name", "brokenvhba",
               "--kernels", REFERENCE_KERNEL, "-k", "build")  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    (cell,) = load_run(tmp_path / "r" / "latest").cells
    assert cell.cell_id == f"{REFERENCE_KERNEL}-brokenvhba-ours"
    assert cell.overall.value == "fail" and "did not build" in (cell.message or "")
    log = (tmp_path / "r" / "latest" / cell.artifacts["build_log"]).read_text(errors="replace")
    assert "error:" in log and "scsi_done" in log, log[-2000:]
    assert f'data-cell="{cell.cell_id}"' in (tmp_path / "r" / "latest" / "index.html").read_text()
