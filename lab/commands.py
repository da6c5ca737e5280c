"""Handlers for the matrix-shaped subcommands (``build``; ``run``/``matrix``/``report``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from lab.buildmatrix import matrix_table, run_compile_matrix, timestamp
from lab.context import LabContext


def cmd_build(args: argparse.Namespace) -> int:
    ctx = LabContext.from_args(args)
    kernels = ctx.resolve(args.kernels)
    out = Path("reports") / "build" / timestamp()
    rows = run_compile_matrix(ctx, kernels, out, jobs=args.jobs, werror=not args.no_werror)
    Console().print(matrix_table(rows))
    return 0 if all(row.ok for row in rows) else 1
