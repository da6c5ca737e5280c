"""The matrix for CI engines: one job per cell, cached by image key, merged at the end.

``vhba-lab matrix --format github`` prints the ``strategy.matrix`` that
``.github/workflows/matrix.yml`` fans out over; ``--format gitlab`` prints
the child pipeline that ``.gitlab-ci.yml`` triggers (JSON, which GitLab
reads as YAML).  Both carry, per cell, a ``cache_key``: the guest image's
content address (:func:`lab.build.images.image_key`), or for a debug kernel the
content address of its build (which its image is made from), so a job
restores exactly the image it needs and a new kernel upload or recipe change
makes a new entry.

Every cell job runs the README's command for one cell (``./run.sh matrix
--cell ID --reports reports/ID``) and keeps ``reports/ID`` as its artifact;
the last job merges those run directories into one report whose exit code
is the matrix's (``vhba-lab report merge``).
"""

from __future__ import annotations

from typing import Any

from lab.build.debug_kernel import debug_series
from lab.build.images import image_key
from lab.cell.spec import CellSpec
from lab.context import LabContext

#: Where jobs keep the lab's cache, inside the checkout (CI caches work on paths there).
CACHE_DIR = ".lab-cache"
CELL_REPORTS = "reports/cells"
MERGED = "reports/merged"
# A cell job's time limit.  A debug cell on a runner without KVM builds its
# kernel (12-30 min on 2 cores) and runs ~140 tests under KASAN and lockdep
# (about an hour under TCG, docs/debug-kernels.md): more than a plain cell's.
TIMEOUT_MINUTES = 90
DEBUG_TIMEOUT_MINUTES = 180


def cache_key(ctx: LabContext, kernel: str) -> str:
    """The cache entry a cell on ``kernel`` needs; never builds anything."""
    if debug_series(kernel):
        return f"debug-{ctx.debug_spec(kernel).entry_name}"
    return image_key(ctx.catalogue.resolve(kernel), ctx.mirror)


def github_matrix(ctx: LabContext, cells: list[CellSpec]) -> dict[str, Any]:
    """``strategy.matrix`` for the workflow: ``include`` rows, one per cell."""
    keys = {kernel: cache_key(ctx, kernel) for kernel in dict.fromkeys(c.kernel for c in cells)}
    return {
        "include": [
            {"cell": c.cell_id, "kernel": c.kernel, "module": c.module,
             "responder": c.responder, "cache_key": keys[c.kernel],
             "timeout_minutes": DEBUG_TIMEOUT_MINUTES if debug_series(c.kernel)
             else TIMEOUT_MINUTES}
            for c in cells
        ]
    }  # fmt: skip


def gitlab_pipeline(ctx: LabContext, cells: list[CellSpec]) -> dict[str, Any]:
    """The child pipeline: a job per cell, then a merge that fails when the matrix does."""
    jobs: dict[str, Any] = {
        "stages": ["cells", "report"],
        # Runners with /dev/kvm get KVM, others TCG: the lab chooses (lab/vm/accel.py).
        "default": {"image": "debian:trixie"},
        "variables": {"VHBA_LAB_CACHE": f"$CI_PROJECT_DIR/{CACHE_DIR}"},
    }
    for row in github_matrix(ctx, cells)["include"]:
        cell = row["cell"]
        jobs[f"cell {cell}"] = {
            "stage": "cells",
            "timeout": f"{row['timeout_minutes']}m",
            "cache": {"key": f"vhba-lab-{row['cache_key']}", "paths": [f"{CACHE_DIR}/"]},
            "script": [f"./run.sh matrix --cell {cell} --reports {CELL_REPORTS}/{cell}"],
            "artifacts": {
                "when": "always",
                "paths": [f"{CELL_REPORTS}/{cell}/"],
                "expire_in": "30 days",
            },
        }
    jobs["merge"] = {
        "stage": "report",
        "when": "always",
        "needs": [{"job": name, "artifacts": True} for name in jobs if name.startswith("cell ")],
        "script": [
            "./run.sh setup",
            f".venv/bin/vhba-lab report merge {CELL_REPORTS}/*/[0-9]*/ --out {MERGED}",
        ],
        "artifacts": {"when": "always", "paths": [f"{MERGED}/"], "expire_in": "90 days"},
    }
    return jobs
