"""A booted guest for one run: overlay, QEMU, ssh, warm snapshot restore.

Under TCG a cold boot costs ~40 s and a restore of a saved guest ~2-3 s, so
each image gets a *warm* snapshot once: a qcow2 overlay holding an internal
``savevm`` of the guest at its ssh prompt.  Every later run copies that
overlay into its own run directory and starts QEMU with ``-loadvm``.  The
snapshot is only valid for the same QEMU and the same machine shape, so each
one lives in a directory named by that key (``warm-<key>``): two QEMU
versions or shapes sharing a cache each keep their own, and one never
deletes a snapshot the other is copying.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.build.images import Image, locked
from lab.errors import MachineError
from lab.vm.accel import AccelChoice, qemu_binary
from lab.vm.guest import Guest, SshIdentity
from lab.vm.machine import Machine, MachineSpec

log = logging.getLogger(__name__)

SNAPSHOT_TAG = "ready"
COLD_BOOT_TIMEOUT = 300.0
WARM_BOOT_TIMEOUT = 60.0
# A guest that dies or stays silent before ssh answers gets one more try (see boot()).
BOOT_ATTEMPTS = 2


class BootRetried(UserWarning):
    """A boot failed before ssh and was tried once more (infrastructure, not a verdict)."""


@dataclass
class BootedGuest:
    machine: Machine
    guest: Guest
    image: Image
    workdir: Path
    warm: bool
    ready_seconds: float
    # One line per failed attempt before the one that worked (see boot()).
    retried: tuple[str, ...] = ()


@dataclass(frozen=True)
class Shape:
    """What a guest is started with, besides its disk: everything a restore depends on too."""

    accel: AccelChoice
    memory_mb: int = 2048
    cpus: int = 2
    kernel_args: str = ""  # on every boot's command line, baked into the warm snapshot
    patience: float = 1.0  # multiplies boot and command timeouts (not part of the key)

    def spec(
        self, image: Image, disk: Path, workdir: Path, loadvm: str | None, extra_args: str = ""
    ) -> MachineSpec:
        return MachineSpec(
            kernel=image.kernel, initrd=image.initrd, disk=disk, workdir=workdir,
            accel=self.accel, memory_mb=self.memory_mb, cpus=self.cpus, loadvm=loadvm,
            cmdline=f"{self.kernel_args} {extra_args}".strip(),
        )  # fmt: skip

    def key(self, image: Image) -> str:
        """A restore is valid for the same QEMU, image and device/kernel command line."""
        template = Machine(self.spec(image, Path("disk"), Path("run"), None))
        template.spec.ssh_port = 1
        material = json.dumps([_qemu_version(), image.path.name, template.command()])
        return hashlib.sha256(material.encode()).hexdigest()


def _qemu_version() -> str:
    out = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def _overlay(base: Path, out: Path) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(out)],
        check=True,
    )


def _wait_ssh(machine: Machine, image: Image, timeout: float, shape: Shape) -> Guest:
    guest = Guest(
        SshIdentity(machine.spec.ssh_port, image.client_key, image.host_pubkey),
        alive=machine.is_running,
        patience=shape.patience,
    )
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    probe = 5 * shape.patience  # a slow kernel's sshd is slow to send its banner too
    machine.wait_until(lambda: guest.try_connect(probe), timeout, "reachable over ssh")
    mark = machine.serial_mark()  # what the kernel printed while booting is not news
    guest.oopsed = lambda: machine.oops_since(mark)
    return guest


def warm_dir(image: Image, shape: Shape) -> Path:
    """Where ``image``'s warm snapshot for ``shape`` (and this host's QEMU) lives."""
    return image.path / f"warm-{shape.key(image)[:16]}"


def _ensure_warm(image: Image, shape: Shape, say: Callable[[str], None]) -> Path:
    """The image's warm overlay; one process makes it while others wait for it."""
    with locked(image.path / ".warm.lock"):
        return _make_warm(image, shape, say)


def _make_warm(image: Image, shape: Shape, say: Callable[[str], None]) -> Path:
    """The image's warm overlay, made by one cold boot + savevm if missing or incomplete."""
    key = shape.key(image)
    done = warm_dir(image, shape)
    warm_disk = done / "warm.qcow2"
    with contextlib.suppress(OSError, ValueError):
        if warm_disk.exists() and json.loads((done / "warm.json").read_text()).get("shape") == key:
            return warm_disk
    shutil.rmtree(done, ignore_errors=True)
    tmp = done.with_name(done.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        # The same early-boot retry as boot(): nothing of ours runs in this guest.
        _overlay(image.disk, tmp / "warm.qcow2")
        say(f"cold boot of {image.abi} ({shape.accel.name}) to make its warm snapshot")
        started = time.monotonic()
        spec = shape.spec(image, tmp / "warm.qcow2", tmp, None)
        try:
            with Machine(spec) as machine:
                guest = _wait_ssh(machine, image, COLD_BOOT_TIMEOUT * shape.patience, shape)
                boot_s = time.monotonic() - started
                # Settle: let udev finish so a restored guest starts from a quiet state.
                guest.run(["udevadm", "settle", "-t", "30"], timeout=60, check=False)
                guest.run(["sync"], timeout=60, check=False)
                guest.close()
                machine.savevm(SNAPSHOT_TAG)
            break
        except MachineError as exc:
            if attempt == BOOT_ATTEMPTS:
                raise
            kept = tmp / f"serial-attempt{attempt}.log"
            spec.serial_log.rename(kept)
            note = (f"cold boot of {image.abi} failed before ssh ({str(exc).splitlines()[0]}); "
                    f"retrying once; serial log {kept}")  # fmt: skip
            say(note)
            warnings.warn(BootRetried(note), stacklevel=4)
    (tmp / "warm.json").write_text(
        json.dumps({"shape": key, "cold_boot_seconds": round(boot_s, 1)}) + "\n"
    )
    tmp.rename(done)
    return warm_disk


@contextlib.contextmanager
def boot(
    image: Image,
    workdir: Path,
    accel: AccelChoice,
    *,
    warm: bool = True,
    memory_mb: int = 2048,
    cpus: int = 2,
    disk: Path | None = None,
    progress: Callable[[str], None] | None = None,
    kernel_args: str = "",
    fault_args: Callable[[int], str] | None = None,
    patience: float = 1.0,
) -> Iterator[BootedGuest]:
    """Boot ``image`` in ``workdir`` and yield it reachable over ssh; always shut down.

    ``disk``: boot this existing overlay cold and keep it afterwards (for tests
    that reboot a guest, e.g. DKMS autoload at boot).  By default every run
    gets a fresh overlay (a copy of the warm snapshot), deleted at the end.

    A guest that dies or never answers before ssh is up is infrastructure:
    nothing of ours ran in it yet (under TCG the 6.12 kernel rarely oopses in
    early boot or right after a restore), so one more attempt on a fresh
    overlay is honest.  Each failed attempt's serial log is kept as
    ``serial-attempt<N>.log`` and named in ``BootedGuest.retried``; when the
    last attempt fails too, its MachineError says so and names both logs.

    ``kernel_args``: on every boot's kernel command line (and in the warm
    snapshot's key).  ``fault_args(attempt)``: extra arguments per attempt
    (1-based), which forces a cold boot; the lab's own tests inject
    early-boot failures with it.  ``patience`` multiplies the boot timeouts
    and the guest's command timeouts (a sanitizer kernel runs far slower;
    see :data:`lab.build.debug_kernel.BOOT_PATIENCE`).
    """
    say = progress or (lambda msg: log.info("%s", msg))
    workdir.mkdir(parents=True, exist_ok=True)
    keep = disk is not None
    loadvm: str | None = None
    shape = Shape(accel, memory_mb, cpus, kernel_args, patience)
    if disk is not None or fault_args is not None:
        warm = False
    if disk is None:
        disk = workdir / "disk.qcow2"
        if warm:
            warm_disk = _ensure_warm(image, shape, say)
            cold_log = warm_disk.parent / "serial.log"
            if cold_log.exists():
                shutil.copy2(cold_log, workdir / "boot-serial.log")
            loadvm = SNAPSHOT_TAG
    started = time.monotonic()
    retried: list[str] = []
    attempts = 1 if keep else BOOT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        extra = fault_args(attempt) if fault_args is not None else ""
        spec = shape.spec(image, disk, workdir, loadvm, extra)
        if not keep:  # a fresh overlay for every attempt
            if warm:
                shutil.copy2(warm_disk, disk)
            else:
                _overlay(image.disk, disk)
        machine = Machine(spec)
        machine.launch()
        try:
            timeout = (WARM_BOOT_TIMEOUT if warm else COLD_BOOT_TIMEOUT) * patience
            guest = _wait_ssh(machine, image, timeout, shape)
            break
        except MachineError as exc:
            machine.shutdown()
            cause = machine.panic_line() or str(exc).splitlines()[0]
            if attempt == attempts:
                if not keep:
                    with contextlib.suppress(OSError):
                        disk.unlink()
                if retried:
                    raise MachineError(
                        f"the guest failed to come up twice: {'; '.join(retried)}; then "
                        f"attempt {attempt}: {cause}; serial logs {workdir}/serial-attempt1.log "
                        f"and {spec.serial_log}"
                    ) from exc
                raise
            kept = workdir / f"serial-attempt{attempt}.log"
            spec.serial_log.rename(kept)
            retried.append(f"attempt {attempt}: {cause} (serial log {kept.name})")
            note = (f"boot attempt {attempt} of {image.abi} failed before ssh ({cause}); "
                    f"retrying once on a fresh overlay; serial log {kept}")  # fmt: skip
            say(note)
            # Also a warning, so a test run (pytest's warnings summary) names every retry.
            warnings.warn(BootRetried(note), stacklevel=3)
    try:
        if warm:
            # A restored guest's clock stops at savevm time; make it now.
            guest.run(["date", "-u", "-s", f"@{time.time():.3f}"])
        ready = time.monotonic() - started
        say(
            f"guest {image.abi} ready in {ready:.1f} s ({'warm' if warm else 'cold'}, {accel.name})"
        )
        booted = BootedGuest(machine, guest, image, workdir, warm, ready, tuple(retried))
        try:
            yield booted
        finally:
            guest.close()
    finally:
        machine.shutdown()
        if not keep:
            with contextlib.suppress(OSError):
                disk.unlink()
