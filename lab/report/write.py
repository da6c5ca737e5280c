"""Writing a run's report: results.json, junit.xml, summary.md, index.html, the latest link.

The results model (:mod:`lab.report.results`) knows nothing of the writers; each
writer reads the model; this module is the one place that calls them all, so
no module imports another that imports it back.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

from lab.errors import LabError, UsageError
from lab.report.html import write_html
from lab.report.junit import write_junit
from lab.report.results import (
    LATEST_LINK,
    RESULTS_FILE,
    Cell,
    Run,
    SanitizerFinding,
    artifact_file,
    load_run,
    write_run,
)
from lab.report.summary import write_summary

log = logging.getLogger(__name__)


def write_report(
    run: Run,
    run_dir: Path,
    previous: Run | None = None,
    *,
    update_latest: bool = True,
) -> None:
    """Write results.json, junit.xml, summary.md and index.html into ``run_dir``.

    Refuses to write into a directory that holds a different run, so a report
    is never overwritten by another run.  When ``update_latest`` is set, the
    ``latest`` symlink next to ``run_dir`` is pointed at it (atomically).
    """
    existing = run_dir / RESULTS_FILE
    if existing.exists():
        try:
            other = json.loads(existing.read_text(encoding="utf-8")).get("run_id")
        except (ValueError, AttributeError):
            other = None
        if other != run.run_id:
            raise LabError(
                f"{run_dir} already holds run {other!r}; refusing to overwrite it with "
                f"run {run.run_id!r}: write each run to its own directory (reports/<run-id>)"
            )
    elif run_dir.exists() and run_dir.is_symlink():
        raise LabError(f"{run_dir} is a symlink; write the report to a real directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run(run, run_dir)
    write_junit(run, run_dir / "junit.xml")
    write_summary(run, run_dir / "summary.md", previous)
    write_html(run, run_dir, previous)
    if update_latest:
        update_latest_link(run_dir)


def update_latest_link(run_dir: Path) -> Path:
    """Point ``<parent>/latest`` at ``run_dir`` with a relative symlink, atomically."""
    link = run_dir.parent / LATEST_LINK
    if run_dir.name == LATEST_LINK:
        raise UsageError(f"{run_dir}: a run directory cannot be named {LATEST_LINK!r}")
    if link.exists() and not link.is_symlink():
        raise LabError(
            f"{link} is a real file or directory, not a symlink; move it away so "
            f"{LATEST_LINK!r} can point at the newest run"
        )
    tmp = run_dir.parent / f".{LATEST_LINK}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, link)
    return link


# -- merging ----------------------------------------------------------------


def merge_runs(run_dirs: list[Path], out_dir: Path, *, run_id: str | None = None) -> Run:
    """Merge run directories (e.g. from several machines) into one report in ``out_dir``.

    Artifacts are copied (not linked) so the merged report is self-contained
    and every link in it resolves after archiving.  A cell id present in
    several inputs is taken from the *later* directory in ``run_dirs`` with a
    logged warning: that is how a re-run of one cell replaces the old result.
    Two inputs that put different files at the same relative path keep both:
    the later one moves under ``<source-run-id>/``.  The merged report is
    written with :func:`write_report` (without touching ``latest``).
    """
    if not run_dirs:
        raise UsageError("merge needs at least one run directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir} is not empty; merge into a new directory")
    sources = [(Path(d), load_run(Path(d))) for d in run_dirs]

    winners: dict[str, tuple[Path, Run, Cell]] = {}
    for src_dir, run in sources:
        for cell in run.cells:
            if cell.cell_id in winners:
                prev_run = winners[cell.cell_id][1]
                log.warning(
                    "cell %s is in both run %s and run %s; keeping the one from %s",
                    cell.cell_id,
                    prev_run.run_id,
                    run.run_id,
                    run.run_id,
                )
            winners[cell.cell_id] = (src_dir, run, cell)

    out_dir.mkdir(parents=True, exist_ok=True)
    copier = _ArtifactCopier(out_dir)
    cells = []
    for src_dir, run, cell in winners.values():
        cells.append(copier.relocate_cell(src_dir, run.run_id, cell))

    runs = [r for _, r in sources]
    merged = Run(
        run_id=run_id or out_dir.name,
        started=min(r.started for r in runs),
        finished=max(r.finished for r in runs),
        host=dict(runs[0].host),
        cells=cells,
        merged_from=[{"run_id": r.run_id, "host": dict(r.host)} for r in runs],
    )
    write_report(merged, out_dir, update_latest=False)
    return merged


class _ArtifactCopier:
    """Copies artifacts into the merged directory, resolving path clashes."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        # rel path in out_dir -> the source file copied there; None reserves the
        # path of a missing artifact so no other file can appear under its name.
        self.claimed: dict[str, Path | None] = {}
        self.done: dict[tuple[Path, str], str] = {}

    def relocate_cell(self, src_dir: Path, source_id: str, cell: Cell) -> Cell:
        """A copy of ``cell`` whose artifact paths point into the merged directory."""

        def moved(artifacts: dict[str, str]) -> dict[str, str]:
            return {k: self.copy(src_dir, source_id, v) for k, v in artifacts.items()}

        def moved_findings(findings: list[SanitizerFinding]) -> list[SanitizerFinding]:
            copy = self.copy
            return [replace(f, artifact=copy(src_dir, source_id, f.artifact)) for f in findings]

        return replace(
            cell,
            origin=cell.origin or source_id,
            artifacts=moved(cell.artifacts),
            tests=[
                replace(t, artifacts=moved(t.artifacts), findings=moved_findings(t.findings))
                for t in cell.tests
            ],
        )

    def copy(self, src_dir: Path, source_id: str, rel: str) -> str:
        key = (src_dir, rel)
        if key in self.done:
            return self.done[key]
        src = artifact_file(src_dir, rel)
        dest_rel = rel
        if dest_rel in self.claimed and not _same(self.claimed[dest_rel], src):
            dest_rel = f"{source_id}/{rel}"
        if src is None:
            log.warning("artifact %s is missing from %s; the report will say so", rel, src_dir)
            self.claimed.setdefault(dest_rel, None)
        elif dest_rel not in self.claimed:
            dest = self.out_dir / dest_rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dest)
            else:
                shutil.copy2(src, dest)
            self.claimed[dest_rel] = src
        self.done[key] = dest_rel
        return dest_rel


def _same(a: Path | None, b: Path | None) -> bool:
    if a is None or b is None:
        return False
    if a.is_dir() or b.is_dir():
        return a.resolve() == b.resolve()
    return filecmp.cmp(a, b, shallow=False)
