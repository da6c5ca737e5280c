"""The ``vhba-lab`` command.

Every LabError is printed as one line (plus its detail lines) without a
traceback, and the process exits with the error's code: 3 for usage errors,
2 for infrastructure errors.  ``-v`` shows tracebacks for debugging the lab.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from lab.context import LabContext
from lab.errors import LabError, UsageError

if TYPE_CHECKING:
    from lab.build.kernel_install import AnyKernel


def _workers(text: str) -> int | None:
    """``-n``: a positive count, or ``auto`` (None: chosen from the host)."""
    if text == "auto":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of cells or auto")


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("environment")
    group.add_argument("--mirror", help="Debian archive URI (default: from the host's apt sources)")
    group.add_argument("--security-mirror", help="Debian security URI (default: from apt)")
    group.add_argument(
        "--accel",
        choices=["auto", "kvm", "tcg"],
        help="QEMU accelerator (default: auto, or $VHBA_LAB_ACCEL)",
    )
    group.add_argument("--refresh", action="store_true", help="re-download the package indices")
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")


def _add_module_option(parser: argparse.ArgumentParser, known_as: bool = False) -> None:
    """--module and --module-name; ``known_as``: --module-known-as too (runs only)."""
    parser.add_argument(
        "--module", metavar="PATH", default=None,
        help="test this vhba module tree or release tarball instead of ours "
        "(e.g. an upstream vhba-module checkout; lab/build/module_source.py)",
    )  # fmt: skip
    parser.add_argument(
        "--module-name", metavar="NAME", default=None,
        help="its name in cell ids and reports (default: from the directory name)",
    )  # fmt: skip
    if known_as:
        parser.add_argument(
            "--module-known-as", metavar="MODULE", default=None,
            help="count the known failures listed for MODULE (e.g. upstream, for a copy or "
            "checkout of upstream vhba) as known for this tree too",
        )  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse with the README's exit code for a usage error (3, not argparse's 2,
    which the lab keeps for harness errors)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(UsageError.exit_code, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vhba-lab",
        description="Test the VHBA kernel module on real Debian kernels in QEMU guests.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("kernels", help="list the kernel series available on the mirror")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_common(p)

    p = sub.add_parser("images", help="build, list or prune cached guest images")
    p.add_argument("action", choices=["build", "list", "prune"])
    p.add_argument(
        "--kernels",
        nargs="+",
        default=[],
        metavar="K",
        help="kernels for 'build' (series, release, version, or 'all')",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    p.add_argument(
        "--all", action="store_true", help="'prune': delete every cached image, not only stale ones"
    )
    _add_common(p)

    p = sub.add_parser("shell", help="boot a guest on a kernel; open a shell or run a command")
    p.add_argument(
        "--kernel",
        required=True,
        metavar="K",
        help="series (6.12), release (trixie), exact version, or a kernel build dir",
    )
    p.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="boot, print the ssh command, and wait (Ctrl-C stops the guest)",
    )
    p.add_argument("--cold", action="store_true", help="cold boot instead of the warm snapshot")
    p.add_argument(
        "--with-module",
        action="store_true",
        help="build and load our vhba module before handing over",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD: run CMD instead of a shell")
    _add_common(p)

    p = sub.add_parser(
        "debug-kernel",
        help="build or list debug kernels (Debian source + KASAN/UBSAN/lockdep/kmemleak)",
    )
    p.add_argument("action", choices=["build", "list"])
    p.add_argument(
        "--series",
        default="6.12",
        metavar="X.Y",
        help="series whose Debian source is rebuilt (default: 6.12 -> 6.12-debug)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    _add_common(p)

    p = sub.add_parser("build", help="compile matrix: build module/ for many kernels")
    p.add_argument("--kernels", nargs="+", default=["all"], metavar="K")
    p.add_argument("-j", "--jobs", type=int, default=0, help="parallel builds (default: cores)")
    p.add_argument("--no-werror", action="store_true", help="do not turn warnings into errors")
    _add_module_option(p)
    _add_common(p)

    p = sub.add_parser("run", help="run the conformance matrix and write a report")
    p.add_argument(
        "--kernels",
        nargs="+",
        default=None,
        metavar="K",
        help="kernels to test (default: every series)",
    )
    p.add_argument(
        "--cell",
        action="append",
        default=[],
        help="only this cell, e.g. 6.12-ours-ours (repeatable)",
    )
    p.add_argument("-k", dest="keyword", help="only tests matching this pytest -k expression")
    p.add_argument(
        "-n",
        dest="workers",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="cells in parallel (default auto: as many guests as the host's cores and RAM hold)",
    )
    p.add_argument("--reports", type=Path, default=Path("reports"), help="reports directory")
    p.add_argument(
        "--quick",
        action="store_true",
        help="skip the slow tests (those that wait on SCSI timeouts, start "
        "many drives or a second stack, or use large media): a smoke run for a "
        "contributor; release gating runs full cells",
    )
    p.add_argument(
        "--responder-fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="start our responder with this fault (e.g. capacity:blocks=1000) "
        "to check that the suite catches a broken drive",
    )
    p.add_argument(
        "--module-fault",
        choices=("uaf", "leak"),  # lab.build.module.MODULE_FAULTS; not imported: a light CLI
        default=None,
        help="TEST ONLY: build our module with this deliberate bug (uaf: a use-after-free "
        "at close; leak: each closed device is never freed) to check that a debug kernel "
        "cell catches it",
    )
    p.add_argument(
        "--boot-fault",
        choices=("panic", "panic-once"),  # lab.cell.env.BOOT_FAULTS
        default=None,
        help="TEST ONLY: make the guest kernel panic before userspace on every boot attempt "
        "(panic) or on the first only (panic-once) to check the boot retry and the single ERROR",
    )
    p.add_argument(
        "--kmemleak-scans",
        choices=("group", "test"),  # lab.cell.health.LEAK_SCAN_SCOPES
        default="group",
        help="when a kernel with kmemleak (a debug kernel) scans for leaks: after each "
        "group's last test (default), or after every test, which names the test that leaked "
        "but costs ~50 s a test under TCG",
    )
    _add_module_option(p, known_as=True)
    _add_common(p)

    p = sub.add_parser("matrix", help="print the default cells (e.g. as a CI job matrix)")
    p.add_argument(
        "--format", choices=["github", "gitlab", "lines"], default="lines",
        help="github: the workflow's strategy.matrix; gitlab: the child pipeline (lab/run/ci.py)",
    )  # fmt: skip
    p.add_argument("--kernels", nargs="+", default=None, metavar="K")
    _add_common(p)

    p = sub.add_parser(
        "report", help="merge result directories from several machines, or export one as KCIDB"
    )
    p.add_argument("action", choices=["merge", "kcidb"])
    p.add_argument("dirs", nargs="+", type=Path, help="run directories (reports/<run-id>)")
    p.add_argument(
        "--out", type=Path, default=None,
        help="merge: output run directory; kcidb: output file (default RUN_DIR/kcidb.json)",
    )  # fmt: skip
    p.add_argument("--origin", default="vhbalab", help="kcidb: the submitting CI system's name")
    p.add_argument(
        "--base-url", default=None,
        help="kcidb: URL where the run directory is published (default: its file:// URL)",
    )  # fmt: skip
    _add_common(p)
    return parser


def cmd_kernels(args: argparse.Namespace) -> int:
    import json

    from lab.build.debug_kernel import debug_states, format_debug_table, known_debug_names
    from lab.catalogue.kernels import format_table

    ctx = LabContext.from_args(args)
    entries = ctx.catalogue.entries()
    debug = debug_states(ctx.debug_kernels, [ctx.debug_spec(n) for n in known_debug_names()])
    if args.json:
        rows: list[dict[str, object]] = [
            {"series": e.series, "version": e.version, "abi": e.abi, "suite": e.suite,
             "release": e.release} for e in entries
        ]  # fmt: skip
        # Debug kernels carry "debug": true so a consumer that builds every row can skip them.
        rows += [
            {"series": d.spec.name, "version": d.spec.source.version,
             "abi": d.kernel_release or None, "suite": None, "release": d.spec.release,
             "debug": True, "built": d.path is not None, "note": d.note} for d in debug
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
    else:
        from rich.console import Console

        # Piped output keeps full columns instead of rich's 80-column default.
        console = Console(width=None if sys.stdout.isatty() else 160)
        console.print(format_table(entries))
        console.print(format_debug_table(debug))
        console.print(
            "debug kernels are built from Debian's source on first use "
            "(vhba-lab debug-kernel build), then cached"
        )
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    import json

    ctx = LabContext.from_args(args)
    if args.action == "list":
        for entry in ctx.images.entries():
            try:
                ctx.images.verify(entry)
                state = "ok"
            except LabError as exc:
                state = f"CORRUPT ({exc})"
            manifest = {}
            if (entry / "manifest.json").exists():
                manifest = json.loads((entry / "manifest.json").read_text())
            print(f"{entry.name}  {manifest.get('built_at', '?')}  {state}")
        return 0
    if args.action == "prune":
        from lab.build.images import image_key

        # Without --all, keep exactly the images the current recipe and catalogue would use,
        # including those of debug kernels that are built (rebuilding one costs an hour).
        keep = set() if args.all else {
            image_key(k, ctx.mirror) for k in [*ctx.catalogue.entries(), *_built_debug(ctx)]
        }  # fmt: skip
        for path in ctx.images.prune(keep=keep):
            print(f"removed {path}")
        return 0
    if not args.kernels:
        raise UsageError("images build needs --kernels (e.g. --kernels 6.12 or --kernels all)")
    failed = []
    for kernel in ctx.resolve(args.kernels):
        started = time.monotonic()
        try:
            image = ctx.images.get(kernel, ctx.mirror, progress=ctx.say, rebuild=args.rebuild)
        except LabError as exc:  # one broken image must not stop the others
            failed.append(kernel.series)
            ctx.say(f"[{kernel.series}] image FAILED: {exc}")
            continue
        ctx.say(f"[{kernel.series}] image ready: {image.path} ({time.monotonic() - started:.0f} s)")
    if failed:
        ctx.say(f"images failed for: {', '.join(failed)}")
    return 1 if failed else 0


def cmd_debug_kernel(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lab.build.debug_kernel import (
        debug_name,
        debug_states,
        format_debug_table,
        known_debug_names,
    )

    ctx = LabContext.from_args(args)
    if args.action == "list":
        specs = [ctx.debug_spec(name) for name in known_debug_names()]
        states = debug_states(ctx.debug_kernels, specs)
        Console(width=None if sys.stdout.isatty() else 160).print(format_debug_table(states))
        return 0
    name = debug_name(args.series.removesuffix("-debug"))
    started = time.monotonic()
    kernel = ctx.debug_kernel(name, rebuild=args.rebuild)
    ctx.say(f"[{name}] ready in {time.monotonic() - started:.0f} s: uname -r {kernel.abi}")
    print(kernel.path)
    return 0


def _built_debug(ctx: LabContext) -> list[AnyKernel]:
    """Debug kernels already in the cache (never builds one)."""
    from lab.build.debug_kernel import known_debug_names

    built: list[AnyKernel] = []
    for name in known_debug_names():
        spec = ctx.debug_spec(name)
        path = ctx.debug_kernels.cached(spec)
        if path is not None:
            built.append(ctx.debug_kernels.kernel(spec, path))
    return built


def cmd_shell(args: argparse.Namespace) -> int:
    import signal

    from lab.build.debug_kernel import boot_tuning
    from lab.vm.session import boot

    ctx = LabContext.from_args(args)
    kernel = ctx.resolve_one(args.kernel)
    image = ctx.image_for(kernel)
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    from lab.paths import cache_root

    workdir = cache_root() / "runs" / f"shell-{kernel.series}-{os.getpid()}"
    tuning = boot_tuning(args.kernel, ctx.accel.name)
    with boot(
        image, workdir, ctx.accel, warm=not args.cold, progress=ctx.say,
        kernel_args=tuning.kernel_args, patience=tuning.patience,
    ) as booted:  # fmt: skip
        if args.with_module:
            from lab.build.module import build_module, require_built
            from lab.cell.module import load_module

            ko = require_built(build_module(image, workdir / "module-build.log"))
            load_module(booted.guest, ko)
        ssh = booted.guest.identity.ssh_command(
            booted.guest.identity.write_known_hosts(workdir / "known_hosts")
        )
        if args.print_only:
            print(shlex.join(ssh), flush=True)
            ctx.say("guest running; Ctrl-C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
            return 0
        if cmd:
            result = booted.guest.run(cmd, timeout=3600, check=False)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.rc
        import subprocess

        return subprocess.call(ssh)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from lab import commands

    handlers = {
        "kernels": cmd_kernels,
        "images": cmd_images,
        "shell": cmd_shell,
        "debug-kernel": cmd_debug_kernel,
        "build": commands.cmd_build,
        "run": commands.cmd_run,
        "matrix": commands.cmd_matrix,
        "report": commands.cmd_report,
    }
    try:
        return handlers[args.command](args)
    except LabError as exc:
        if args.verbose:
            raise
        print(f"vhba-lab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vhba-lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
