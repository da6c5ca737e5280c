"""Handlers for the matrix-shaped subcommands (``build``; ``run``/``matrix``/``report``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from lab.build.buildmatrix import matrix_table, run_compile_matrix, timestamp
from lab.context import LabContext
from lab.errors import UsageError


def cmd_build(args: argparse.Namespace) -> int:
    from lab.build.module import MODULE_SOURCE
    from lab.build.module_source import module_source

    ctx = LabContext.from_args(args)
    source = module_source(args.module, args.module_name).path if args.module else MODULE_SOURCE
    kernels = ctx.resolve(args.kernels)
    out = Path("reports") / "build" / timestamp()
    rows = run_compile_matrix(
        ctx, kernels, out, jobs=args.jobs, werror=not args.no_werror and not args.module,
        source=source,
    )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 160).print(matrix_table(rows))
    return 0 if all(row.ok for row in rows) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from lab.build.module_source import module_source
    from lab.run.runner import run_config, run_matrix, select_cells

    ctx = LabContext.from_args(args)
    if args.module_known_as and not args.module:
        raise UsageError("--module-known-as names what a --module tree shares: add --module PATH")
    source = (
        module_source(args.module, args.module_name, args.module_known_as) if args.module else None
    )
    cells = select_cells(ctx, args.kernels, args.cell, source.name if source else None)
    config = run_config(
        ctx, cells, keyword=args.keyword, quick=args.quick, faults=args.responder_fault,
        module_fault=args.module_fault, boot_fault=args.boot_fault, module=source,
        kmemleak_scans=args.kmemleak_scans,
    )  # fmt: skip
    return run_matrix(ctx, config, args.reports, workers=args.workers).exit_code


def cmd_matrix(args: argparse.Namespace) -> int:
    import json

    from lab.run.ci import github_matrix, gitlab_pipeline
    from lab.run.runner import select_cells

    ctx = LabContext.from_args(args)
    cells = select_cells(ctx, args.kernels, [])
    if args.format == "github":
        print(json.dumps(github_matrix(ctx, cells)))
    elif args.format == "gitlab":
        print(json.dumps(gitlab_pipeline(ctx, cells), indent=1))
    else:
        for cell in cells:
            print(cell.cell_id)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lab.report.results import load_run
    from lab.report.write import merge_runs, write_report

    if args.action == "kcidb":
        import json

        from lab.report.kcidb import kcidb_data

        if len(args.dirs) != 1:
            raise UsageError("'report kcidb' takes one run directory; merge several first")
        (run_dir,) = args.dirs
        data = kcidb_data(load_run(run_dir), run_dir, args.origin, args.base_url)
        target = args.out or run_dir / "kcidb.json"
        target.write_text(json.dumps(data, indent=1) + "\n")
        Console(stderr=True).print(
            f"wrote {target}: {len(data['builds'])} builds, {len(data['tests'])} tests; "
            "submit with 'kcidb-submit -p PROJECT -t TOPIC < FILE' (docs/kcidb.md)",
            soft_wrap=True,  # one line, whatever the path's length: scripts grep it
        )
        return 0
    out = args.out or Path("reports") / f"merged-{timestamp()}"
    run = merge_runs(args.dirs, out)
    write_report(run, out)
    Console(stderr=True).print(
        f"merged {len(args.dirs)} runs into {out / 'index.html'}", soft_wrap=True
    )
    return run.exit_code
