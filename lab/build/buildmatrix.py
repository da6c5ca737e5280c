"""The compile matrix: build module/ for many kernels in parallel, one line per kernel.

Images are prepared one at a time (mmdebstrap saturates the mirror link and
the disk), module builds then run in parallel.  A kernel whose image or build
fails is a failed row with its log; the other rows still run.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from lab.build.module import MODULE_SOURCE, BuildResult, build_module
from lab.catalogue.kernels import KernelEntry
from lab.context import LabContext
from lab.errors import LabError


@dataclass(frozen=True)
class Row:
    kernel: KernelEntry
    result: BuildResult | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok


def run_compile_matrix(
    ctx: LabContext,
    kernels: list[KernelEntry],
    out_dir: Path,
    jobs: int = 0,
    werror: bool = True,
    source: Path = MODULE_SOURCE,
) -> list[Row]:
    """Build ``source`` (our module/ unless a --module tree) for every kernel."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Row] = {}
    images = {}
    for kernel in kernels:
        try:
            images[kernel.series] = ctx.image_for(kernel)
        except LabError as exc:
            rows[kernel.series] = Row(kernel, None, f"image: {exc}".splitlines()[0])
            ctx.say(f"[{kernel.series}] image FAILED: {exc}")

    def one(kernel: KernelEntry) -> Row:
        log = out_dir / kernel.series / "build.log"
        result = build_module(images[kernel.series], log, werror=werror, source=source)
        return Row(kernel, result, None)

    workers = jobs or os.cpu_count() or 2
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(one, k): k for k in kernels if k.series in images}
        for future in concurrent.futures.as_completed(futures):
            kernel = futures[future]
            try:
                row = future.result()
            except LabError as exc:
                row = Row(kernel, None, str(exc).splitlines()[0])
            rows[kernel.series] = row
            status = "ok" if row.ok else "FAILED"
            warn = row.result.warnings if row.result else "-"
            ctx.say(f"[{kernel.series}] build {status}, warnings: {warn}")
    return [rows[k.series] for k in kernels if k.series in rows]


def matrix_table(rows: list[Row]) -> Table:
    table = Table(title="vhba module compile matrix")
    for col in ("series", "kernel", "release", "result", "warnings", "seconds", "log"):
        table.add_column(col)
    for row in rows:
        res = row.result
        table.add_row(
            row.kernel.series, row.kernel.abi, row.kernel.release,
            "[green]ok[/]" if row.ok else f"[red]FAILED[/] {row.error or ''}",
            str(res.warnings) if res else "-", f"{res.seconds:.1f}" if res else "-",
            str(res.log) if res else "-",
        )  # fmt: skip
    return table


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
