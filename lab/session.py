"""A booted guest for one run: overlay, QEMU, ssh, warm snapshot restore.

Under TCG a cold boot costs ~40 s and a restore of a saved guest ~2-3 s, so
each image gets a *warm* snapshot once: a qcow2 overlay holding an internal
``savevm`` of the guest at its ssh prompt.  Every later run copies that
overlay into its own run directory and starts QEMU with ``-loadvm``.  The
snapshot is only valid for the same QEMU and the same machine shape, which
``warm.json`` records; anything else triggers a new cold boot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.accel import AccelChoice, qemu_binary
from lab.errors import MachineError
from lab.guest import Guest, SshIdentity
from lab.images import Image, locked
from lab.machine import Machine, MachineSpec

log = logging.getLogger(__name__)

SNAPSHOT_TAG = "ready"
COLD_BOOT_TIMEOUT = 300.0
WARM_BOOT_TIMEOUT = 60.0
# A guest kernel that dies before ssh answers gets one more try (see boot()).
BOOT_ATTEMPTS = 2


@dataclass
class BootedGuest:
    machine: Machine
    guest: Guest
    image: Image
    workdir: Path
    warm: bool
    ready_seconds: float


def _qemu_version() -> str:
    out = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def _shape(image: Image, accel: AccelChoice, memory_mb: int, cpus: int) -> str:
    """Everything a restore depends on: QEMU, the image, and the device command line."""
    template = Machine(_spec(image, Path("disk"), Path("run"), accel, memory_mb, cpus, None))
    template.spec.ssh_port = 1
    material = json.dumps([_qemu_version(), image.path.name, template.command()], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def _overlay(base: Path, out: Path) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(out)],
        check=True,
    )


def _spec(
    image: Image,
    disk: Path,
    workdir: Path,
    accel: AccelChoice,
    memory_mb: int,
    cpus: int,
    loadvm: str | None,
) -> MachineSpec:
    return MachineSpec(
        kernel=image.kernel, initrd=image.initrd, disk=disk, workdir=workdir, accel=accel,
        memory_mb=memory_mb, cpus=cpus, loadvm=loadvm,
    )  # fmt: skip


def _wait_ssh(machine: Machine, image: Image, timeout: float, what: str) -> Guest:
    guest = Guest(SshIdentity(machine.spec.ssh_port, image.client_key, image.host_pubkey))
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    machine.wait_until(lambda: guest.try_connect(5), timeout, what)
    return guest


def _ensure_warm(
    image: Image, accel: AccelChoice, memory_mb: int, cpus: int, say: Callable[[str], None]
) -> Path:
    """The image's warm overlay; one process makes it while others wait for it."""
    with locked(image.path / ".warm.lock"):
        return _make_warm(image, accel, memory_mb, cpus, say)


def _make_warm(
    image: Image, accel: AccelChoice, memory_mb: int, cpus: int, say: Callable[[str], None]
) -> Path:
    """The image's warm overlay, made by one cold boot + savevm if missing or stale."""
    warm_dir = image.path / "warm"
    warm_disk = warm_dir / "warm.qcow2"
    meta = warm_dir / "warm.json"
    shape = _shape(image, accel, memory_mb, cpus)
    with contextlib.suppress(OSError, ValueError):
        if warm_disk.exists() and json.loads(meta.read_text()).get("shape") == shape:
            return warm_disk
    if warm_dir.exists():
        shutil.rmtree(warm_dir)
    tmp = image.path / "warm.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _overlay(image.disk, tmp / "warm.qcow2")
    say(f"cold boot of {image.abi} ({accel.name}) to make its warm snapshot")
    started = time.monotonic()
    spec = _spec(image, tmp / "warm.qcow2", tmp, accel, memory_mb, cpus, None)
    with Machine(spec) as machine:
        guest = _wait_ssh(machine, image, COLD_BOOT_TIMEOUT, "reachable over ssh")
        boot_s = time.monotonic() - started
        # Settle: let udev finish so a restored guest starts from a quiet state.
        guest.run("udevadm settle -t 30; sync", timeout=60)
        guest.close()
        machine.savevm(SNAPSHOT_TAG)
    (tmp / "warm.json").write_text(
        json.dumps({"shape": shape, "cold_boot_seconds": round(boot_s, 1)}) + "\n"
    )
    tmp.rename(warm_dir)
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
) -> Iterator[BootedGuest]:
    """Boot ``image`` in ``workdir`` and yield it reachable over ssh; always shut down.

    ``disk``: boot this existing overlay cold and keep it afterwards (for tests
    that reboot a guest, e.g. DKMS autoload at boot).  By default every run
    gets a fresh overlay (a copy of the warm snapshot), deleted at the end.
    """
    say = progress or (lambda msg: log.info("%s", msg))
    workdir.mkdir(parents=True, exist_ok=True)
    keep = disk is not None
    loadvm: str | None = None
    if disk is not None:
        warm = False
    else:
        disk = workdir / "disk.qcow2"
        if warm:
            warm_disk = _ensure_warm(image, accel, memory_mb, cpus, say)
            cold_log = warm_disk.parent / "serial.log"
            if cold_log.exists():
                shutil.copy2(cold_log, workdir / "boot-serial.log")
            loadvm = SNAPSHOT_TAG
    spec = _spec(image, disk, workdir, accel, memory_mb, cpus, loadvm)
    started = time.monotonic()
    for attempt in range(1, (1 if keep else BOOT_ATTEMPTS) + 1):
        if not keep:  # a fresh overlay for every attempt
            if warm:
                shutil.copy2(warm_disk, disk)
            else:
                _overlay(image.disk, disk)
        machine = Machine(spec)
        machine.launch()
        try:
            timeout = WARM_BOOT_TIMEOUT if warm else COLD_BOOT_TIMEOUT
            guest = _wait_ssh(machine, image, timeout, "reachable over ssh")
            break
        except MachineError:
            # The guest kernel died before anything of ours ran in it (under TCG
            # the 6.12 kernel rarely oopses in early boot or right after a
            # restore): infrastructure, so one retry on a fresh overlay is
            # honest.  Both serial logs are kept.
            panic = machine.panic_line()
            machine.shutdown()
            if panic is None or attempt == BOOT_ATTEMPTS or keep:
                if not keep:
                    with contextlib.suppress(OSError):
                        disk.unlink()
                raise
            spec.serial_log.rename(workdir / f"serial-attempt{attempt}.log")
            say(f"boot attempt {attempt} of {image.abi}: guest kernel died before ssh "
                f"({panic}); retrying once on a fresh overlay")  # fmt: skip
    try:
        if warm:
            # A restored guest's clock stops at savevm time; make it now.
            guest.run(f"date -u -s @{time.time():.3f} >/dev/null", check=True)
        ready = time.monotonic() - started
        say(
            f"guest {image.abi} ready in {ready:.1f} s ({'warm' if warm else 'cold'}, {accel.name})"
        )
        booted = BootedGuest(machine, guest, image, workdir, warm, ready)
        try:
            yield booted
        finally:
            guest.close()
    finally:
        machine.shutdown()
        if not keep:
            with contextlib.suppress(OSError):
                disk.unlink()
