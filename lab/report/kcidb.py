"""A run as KernelCI's KCIDB report data (schema v5.3), for submission with ``kcidb-submit``.

KCIDB has three linked objects: a *checkout* of the code under test, the
*builds* made from it, and the *tests* run on each build.  A lab run maps as:

* one checkout per run: the lab at its commit (``host.lab_commit``), which
  carries the module source for ``ours`` and names Debian's vhba-dkms for
  ``upstream``;
* one build per (kernel, module): the module compiled for that kernel (its
  status from the cell: FAIL when the module did not build or load), with
  the build log as ``log_url``;
* one test per conformance test per cell, under ``vhba.<group>.<test>``,
  with the responder and accelerator in its environment, the test's log as
  ``log_url`` and its other artifacts (kmsg slice, sanitizer reports) as
  ``output_files``.

Statuses: pass -> PASS, fail and sanitizer -> FAIL, known -> FAIL (KCIDB has
no "expected failure"; ``misc.known_failure`` names the entry), error ->
ERROR, skip -> SKIP.  A cell that broke before its tests is one ERROR test
at path ``vhba`` with the cause.  KCIDB links are URLs: artifacts resolve
against ``base_url`` (where the run directory is published), by default the
run directory's own ``file://`` URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lab.errors import UsageError
from lab.report.results import Cell, Run, Status, TestResult

SCHEMA = {"major": 5, "minor": 3}
DEFAULT_ORIGIN = "vhbalab"
_STATUS = {
    Status.PASS: "PASS", Status.FAIL: "FAIL", Status.SANITIZER: "FAIL", Status.KNOWN: "FAIL",
    Status.ERROR: "ERROR", Status.SKIP: "SKIP",
}  # fmt: skip
_ORIGIN = re.compile(r"^[a-z0-9_]+$")
_PATH_PART = re.compile(r"[^a-zA-Z0-9_-]+")


def _part(text: str) -> str:
    """One segment of a KCIDB test path (letters, digits, ``_`` and ``-`` only)."""
    return _PATH_PART.sub("_", text).strip("_") or "_"


class Kcidb:
    """Turns one :class:`~lab.report.results.Run` into KCIDB data."""

    def __init__(self, run: Run, run_dir: Path, origin: str = DEFAULT_ORIGIN,
                 base_url: str | None = None) -> None:  # fmt: skip
        if not _ORIGIN.match(origin):
            raise UsageError(f"bad KCIDB origin {origin!r}: use lower-case letters, digits and _")
        self.run = run
        self.origin = origin
        self.base = (base_url or run_dir.resolve().as_uri()).rstrip("/") + "/"

    def _id(self, *parts: str) -> str:
        return f"{self.origin}:" + ":".join(parts)

    def url(self, rel: str) -> str:
        return self.base + quote(rel)

    def _files(self, artifacts: dict[str, str], skip: str | None = None) -> list[dict[str, str]]:
        return [
            {"name": _part(label) + Path(rel).suffix, "url": self.url(rel)}
            for label, rel in artifacts.items()
            if rel != skip
        ]

    def checkout(self) -> dict[str, Any]:
        commit = self.run.host.get("lab_commit", "unknown")
        out: dict[str, Any] = {
            "id": self._id(self.run.run_id), "origin": self.origin, "tree_name": "vhba-lab",
            "start_time": self.run.started.isoformat(), "valid": True,
            "comment": f"vhba-lab at {commit}: our vhba module and Debian's vhba-dkms",
            "misc": {"lab_commit": commit, "host": dict(self.run.host)},
        }  # fmt: skip
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            out["git_commit_hash"] = commit
        return out

    def build_id(self, cell: Cell) -> str:
        abi = cell.kernel.get("abi") or cell.kernel.get("series", "unknown")
        return self._id(self.run.run_id, abi, cell.module)

    def build(self, cell: Cell, cells: list[Cell]) -> dict[str, Any]:
        """The module build that ``cells`` (same kernel and module) share."""
        failed = [c for c in cells if c.status is Status.FAIL]
        abi = cell.kernel.get("abi", cell.kernel.get("series", "?"))
        out: dict[str, Any] = {
            "id": self.build_id(cell), "checkout_id": self._id(self.run.run_id),
            "origin": self.origin, "architecture": "x86_64", "config_name": cell.module,
            "comment": f"vhba module '{cell.module}' for Linux {abi}",
            "status": "FAIL" if failed else "PASS",
            "misc": {"kernel": dict(cell.kernel), "cells": [c.cell_id for c in cells]},
        }  # fmt: skip
        log = next((c.artifacts["build_log"] for c in cells if "build_log" in c.artifacts), None)
        if log:
            out["log_url"] = self.url(log)
        if failed and failed[0].message:
            out["log_excerpt"] = failed[0].message[:16384]
        return out

    def test(self, cell: Cell, test: TestResult) -> dict[str, Any]:
        log = test.artifacts.get("log")
        misc: dict[str, Any] = {"cell": cell.cell_id, "lab_status": test.status.value,
                                "reproducer": cell.reproducer}  # fmt: skip
        if test.known_failure:
            misc["known_failure"] = dict(test.known_failure)
        if test.findings:
            misc["sanitizer"] = [{"kind": f.kind.value, "title": f.title} for f in test.findings]
        if test.measurements:
            misc["measurements"] = dict(test.measurements)
        out: dict[str, Any] = {
            "id": self._id(self.run.run_id, cell.cell_id, test.name),
            "build_id": self.build_id(cell), "origin": self.origin,
            "path": ".".join(["vhba", _part(test.group), _part(test.name.split("/", 1)[-1])]),
            "status": _STATUS[test.status], "duration": float(test.duration_s),
            "environment": {"comment": f"responder {cell.responder}, {cell.accel}"},
            "misc": misc,
        }  # fmt: skip
        if test.message:
            out["comment"] = test.message[:1000]
        if log:
            out["log_url"] = self.url(log)
        files = self._files(test.artifacts, skip=log)
        if files:
            out["output_files"] = files
        return out

    def cell_error(self, cell: Cell) -> dict[str, Any]:
        """A cell with no tests (it broke first): one test for the whole cell."""
        out: dict[str, Any] = {
            "id": self._id(self.run.run_id, cell.cell_id, "cell"), "build_id": self.build_id(cell),
            "origin": self.origin, "path": "vhba", "status": _STATUS[cell.overall],
            "environment": {"comment": f"responder {cell.responder}, {cell.accel}"},
            "comment": (cell.message or "the cell ran no test")[:1000],
            "misc": {"cell": cell.cell_id, "reproducer": cell.reproducer},
        }  # fmt: skip
        files = self._files(cell.artifacts)
        if files:
            out["output_files"] = files
        return out

    def data(self) -> dict[str, Any]:
        builds: dict[str, list[Cell]] = {}
        for cell in self.run.cells:
            builds.setdefault(self.build_id(cell), []).append(cell)
        tests = []
        for cell in self.run.cells:
            if not cell.tests:
                tests.append(self.cell_error(cell))
            tests.extend(self.test(cell, test) for test in cell.tests)
        return {
            "version": dict(SCHEMA),
            "checkouts": [self.checkout()],
            "builds": [self.build(cells[0], cells) for cells in builds.values()],
            "tests": tests,
        }


def kcidb_data(run: Run, run_dir: Path, origin: str = DEFAULT_ORIGIN,
               base_url: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The KCIDB report data for ``run`` (stored in ``run_dir``)."""
    return Kcidb(run, run_dir, origin, base_url).data()
