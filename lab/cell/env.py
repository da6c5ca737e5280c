"""Bringing one matrix cell up and down: image, module build, guest, module, drive.

A cell goes wrong in two different ways and the report must tell them apart:

* the *product* failed (our module does not build or load, the drive never
  attaches): recorded in ``broken`` and reported by the build/attach tests
  as FAIL, with every later test of the cell skipped for that reason;
* the *guest* was lost (no image, the guest did not boot even on its
  retry, QEMU died or ssh went silent mid-cell): recorded once in ``loss``
  (:mod:`lab.cell.state` names the cause from the serial log and says
  whether the module can be blamed); the test that saw it carries that
  cause and every later test is skipped.

Everything a person needs to judge the cell lands in its directory (the
build log, the serial log, the full dmesg, the responder log and CDB trace),
listed in its cell.json by :class:`lab.cell.record.CellRecorder`.

Around each test the kernel's health is checked (``CellEnv.health``,
:mod:`lab.cell.health`): sanitizer reports of debug kernels make the test
SANITIZER with the bug named; BUG/WARNING lines and new taint bits fail it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.build.debug_kernel import boot_tuning
from lab.build.images import Image, locked
from lab.build.kernel_install import AnyKernel
from lab.build.media import Medium, build_iso
from lab.build.module import BuildResult, build_module
from lab.build.module_source import ModuleSource
from lab.catalogue.digest import sha256_file
from lab.cell.drives import Drive, DriveNode, make_drive
from lab.cell.health import KernelHealth
from lab.cell.module import load_module
from lab.cell.record import CellRecorder
from lab.cell.spec import MODULES, CellSpec
from lab.cell.state import CellLoss, CellState, LossKind, classify_loss
from lab.context import LabContext
from lab.errors import GuestLostError, LabError
from lab.vm.session import BootedGuest, boot

# World-readable, so a responder running as an unprivileged user can open the images.
GUEST_MEDIA = "/srv/vhba-media"
UPSTREAM_SOURCE = "/opt/vhba-upstream"
#: Kernel arguments that make a guest's init exit at once: "Attempted to kill
#: init", a kernel panic before userspace (panic=-1, -no-reboot: QEMU exits).
PANIC_BEFORE_USERSPACE = "init=/bin/false"
#: ``--lab-boot-fault`` values: early-boot failures that prove the retry and
#: the single ERROR (attempt number -> extra kernel arguments).
BOOT_FAULTS: dict[str, Callable[[int], str]] = {
    "panic": lambda attempt: PANIC_BEFORE_USERSPACE,
    "panic-once": lambda attempt: PANIC_BEFORE_USERSPACE if attempt == 1 else "",
}


def media_set(run_dir: Path) -> dict[str, Medium]:
    """The run's test media, built once per run on the host and shared by its cells.

    Every pytest-xdist worker calls this when its first cell starts; the lock
    makes the first one build and the others reuse its files.  Rebuilding
    would change the images under cells that already uploaded them.
    """
    media_dir = run_dir / "media"
    recipes = {
        "cd1": ("VHBALAB_CD1", 1, None),
        "cd2": ("VHBALAB_CD2", 2, {"/OTHER.BIN": 200_000, "/README.TXT": 100}),
    }
    media = {}
    with locked(media_dir / ".lock"):
        for name, (label, seed, layout) in recipes.items():
            path = media_dir / f"{name}.iso"
            media[name] = Medium.load(path) or build_iso(path, label, seed, layout)
    return media


@dataclass
class CellEnv:
    ctx: LabContext
    spec: CellSpec
    cell_dir: Path
    media: dict[str, Medium]
    faults: list[str] = field(default_factory=list)  # passed to our responder at start
    module_fault: str | None = None  # a deliberate bug our module is built with (MODULE_FAULTS)
    boot_fault: str | None = None  # an early-boot failure to inject (BOOT_FAULTS)
    module_source: ModuleSource | None = None  # the --module tree, for cells of its name
    kmemleak_scans: str = "group"  # after each group's last test or every test (lab.cell.health)
    kernel: AnyKernel | None = None
    image: Image | None = None
    build: BuildResult | None = None
    booted: BootedGuest | None = None
    drive: Drive | None = None
    nodes: list[DriveNode] = field(default_factory=list)
    broken: str | None = None  # why the product failed; later tests skip
    state: CellState = CellState.BOOTING
    loss: CellLoss | None = None  # why the guest is gone (see lab.cell.state); later tests skip
    loss_reported: bool = False  # a test already carries the loss
    module_loaded: bool = False
    _serial_mark: int = 0  # serial log size when the cell became ready
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    record: CellRecorder = field(init=False)  # cell.json, timings, artifacts (lab.cell.record)
    health: KernelHealth = field(init=False)  # the checks around every test (lab.cell.health)

    def __post_init__(self) -> None:
        self.record = CellRecorder(self.cell_dir, self.spec.responder)
        self.health = KernelHealth(
            lambda: self.guest, self.cell_dir, self.record.phase, leak_scans=self.kmemleak_scans
        )

    @property
    def lineage(self) -> str | None:
        """Whose module this is: "ours" or "upstream", None for another tree.

        A ``--module`` tree counts as the one it is ``--module-known-as``.  Tests
        of our module's own extensions (direct reads) ask this, not the cell's
        module name, so a contributor's copy of our module is tested as ours.
        """
        if self.spec.module in MODULES:
            return self.spec.module
        return self.module_source.known_as if self.module_source else None

    # -- bring-up -------------------------------------------------------------
    def setup(self) -> None:
        """Bring the cell up; a harness failure on the way leaves it BROKEN with a BOOT loss."""
        self.cell_dir.mkdir(parents=True, exist_ok=True)
        self._write_cell_json("running")
        try:
            self._bring_up()
        except LabError as exc:
            self.lose(CellLoss(LossKind.BOOT, _one_line(exc), self.module_loaded))
            return
        if self.broken is None:
            self.state = CellState.READY
            serial = self.cell_dir / "guest" / "serial.log"
            self._serial_mark = serial.stat().st_size if serial.exists() else 0
        else:
            self.state = CellState.BROKEN
        self._write_cell_json("running")

    def lose(self, loss: CellLoss) -> CellLoss:
        """Mark the cell BROKEN by ``loss`` (the first one wins) and record it in cell.json."""
        if self.loss is None:
            self.loss = loss
            self.state = CellState.BROKEN
            self._write_cell_json("running")
        return self.loss

    def guest_lost(self, seen: BaseException) -> CellLoss:
        """Name the loss of a READY cell's guest from QEMU's state and the serial log."""
        if self.loss is not None:
            return self.loss
        serial = ""
        exit_code = None
        if self.booted is not None:
            machine = self.booted.machine
            if machine.is_running():
                # ssh is gone but QEMU runs: give a dying kernel a moment to finish its report.
                time.sleep(2)
            exit_code = machine.exit_code()
            with contextlib.suppress(OSError), machine.spec.serial_log.open("rb") as fh:
                fh.seek(self._serial_mark)
                serial = fh.read().decode(errors="replace")
        return self.lose(classify_loss(serial, exit_code, self.module_loaded, _one_line(seen)))

    def qemu_gone(self) -> bool:
        return self.booted is not None and not self.booted.machine.is_running()

    def _boot_fault_args(self) -> Callable[[int], str] | None:
        if self.boot_fault is None:
            return None
        if self.boot_fault not in BOOT_FAULTS:
            raise LabError(f"unknown boot fault {self.boot_fault!r}; use one of "
                           f"{', '.join(BOOT_FAULTS)}")  # fmt: skip
        return BOOT_FAULTS[self.boot_fault]

    def _bring_up(self) -> None:
        # A debug kernel goes the --kernel DIR way: built (or taken from its cache) here.
        self.kernel = self.ctx.resolve_one(self.spec.kernel)
        with self.record.phase("image"):
            self.image = self.ctx.image_for(self.kernel)
        with self.record.phase("module_build"):
            self.build = build_module(
                self.image,
                self.cell_dir / "build.log",
                werror=self.spec.module == "ours",
                source=self._source(),
                inject=self.module_fault if self.spec.module == "ours" else None,
            )
        if not self.build.ok:
            self.broken = f"the {self.spec.module} module did not build for {self.kernel.abi}"
            return
        with self.record.phase("guest_ready"):
            tuning = boot_tuning(self.spec.kernel, self.ctx.accel.name)
            booting = boot(
                self.image, self.cell_dir / "guest", self.ctx.accel,
                progress=self.ctx.say, kernel_args=tuning.kernel_args,
                fault_args=self._boot_fault_args(), patience=tuning.patience,
            )  # fmt: skip
            self.booted = self._stack.enter_context(booting)
        guest = self.booted.guest
        assert self.build.ko is not None
        try:
            # the first test's health check also judges the load and the drive's start
            self.health.watch_from("module load")
            with self.record.phase("module_load"):
                self.module_loaded = True  # from here on the kernel may run module code
                load_module(guest, self.build.ko)
        except GuestLostError:
            raise
        except LabError as exc:
            self.broken = f"the {self.spec.module} module did not load: {exc}"
            return
        with self.record.phase("media_upload"):
            guest.run(["mkdir", "-p", "-m", "755", GUEST_MEDIA])
            for name, medium in self.media.items():
                guest.upload(medium.path, f"{GUEST_MEDIA}/{name}.iso")
        self.drive = make_drive(self.spec.responder, guest)
        try:
            with self.record.phase("drive_start"):
                self.drive.ship()
                self.nodes = self.drive.start([f"{GUEST_MEDIA}/cd1.iso"], faults=self.faults)
        except GuestLostError:
            raise
        except LabError as exc:
            self.broken = f"the drive did not attach: {exc}"

    def _source(self) -> Path:
        from lab.build.module import MODULE_SOURCE

        if self.spec.module == "ours":
            return MODULE_SOURCE
        if self.spec.module != "upstream":
            if self.module_source is None or self.module_source.name != self.spec.module:
                raise LabError(
                    f"cell {self.spec.cell_id} names module {self.spec.module!r}, but the run "
                    "has no such --module tree"
                )
            return self.module_source.path
        assert self.image is not None
        found = sorted((self.image.tree / UPSTREAM_SOURCE.lstrip("/")).glob("usr/src/vhba-*"))
        if not found:
            raise LabError(
                f"the image has no upstream vhba source under {UPSTREAM_SOURCE}; rebuild it "
                "with 'vhba-lab images build --rebuild'"
            )
        return found[-1]

    # -- per-test kernel health ----------------------------------------------
    @property
    def guest(self):
        assert self.booted is not None, "no guest: the cell is broken"
        return self.booted.guest

    # -- tear-down ------------------------------------------------------------
    def teardown(self, status: str = "done") -> None:
        start = time.monotonic()
        try:
            if self.drive is not None and self.booted is not None and not self.qemu_gone():
                with contextlib.suppress(LabError, OSError):
                    self.drive.stop()
                with contextlib.suppress(LabError, OSError):
                    self.drive.fetch_logs(self.cell_dir)
            if self.booted is not None and not self.qemu_gone():
                with contextlib.suppress(LabError, OSError):
                    dmesg = self.booted.guest.run(["dmesg"], timeout=60, check=False).stdout
                    (self.cell_dir / "dmesg.txt").write_text(dmesg)
        finally:
            self._stack.close()
            self.record.keep_serial_logs(self.cell_dir / "guest")
            self.record.phases["teardown"] = round(time.monotonic() - start, 2)
            self._write_cell_json(status)

    def _provenance(self) -> dict[str, str]:
        """Which module source this cell built, and the sha256 of what it built."""
        info: dict[str, str] = {"kind": self.spec.module}
        if self.module_source is not None and self.spec.module == self.module_source.name:
            info.update(self.module_source.provenance())
        elif self.spec.module == "ours":
            from lab.build.module import MODULE_SOURCE

            info["path"] = str(MODULE_SOURCE)
        if self.build is not None and self.build.ko is not None and self.build.ko.exists():
            info["ko_sha256"] = sha256_file(self.build.ko)
        return info

    def _write_cell_json(self, status: str) -> None:
        kernel = self.kernel
        info = {
            "cell_id": self.spec.cell_id,
            "kernel": {
                "series": self.spec.kernel,
                "version": kernel.version if kernel else None,
                "abi": kernel.abi if kernel else None,
                "release": kernel.release if kernel else None,
            },
            "module": self.spec.module,
            "responder": self.spec.responder,
            "accel": self.ctx.accel.name,
            "state": status,
            "cell_state": self.state.value,
            "broken": self.broken,
            "loss": self.loss.to_json() if self.loss else None,
            "boot_retries": list(self.booted.retried) if self.booted else [],
            "ready_seconds": self.booted.ready_seconds if self.booted else None,
            "build": {
                "ok": self.build.ok, "warnings": self.build.warnings,
                "seconds": self.build.seconds,
            } if self.build else None,
            "module_provenance": self._provenance(),
        }  # fmt: skip
        self.record.write(info)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:400]
