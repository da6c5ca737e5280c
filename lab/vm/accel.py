"""Choosing the QEMU accelerator: KVM only where it really works, TCG otherwise.

``/dev/kvm`` existing is not enough: some hosts expose a paravirtual KVM
(``kvm_pvm``) with no VMX/SVM underneath, on which Debian kernels do not boot.
So KVM is chosen only when the CPU advertises vmx/svm, the device opens
read-write, and QEMU itself reports KVM enabled after a quick start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from lab.errors import UsageError

CHOICES = ("auto", "kvm", "tcg")
ENV_VAR = "VHBA_LAB_ACCEL"
QEMU_ENV_VAR = "VHBA_LAB_QEMU"


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator a run uses and why (recorded in every result)."""

    name: str  # "kvm" or "tcg"
    reason: str

    def qemu_args(self) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        # thread=multi lets 2 vCPUs use 2 host cores; tb-size bounds RSS per guest.
        return ["-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max"]


def qemu_binary() -> str:
    """Path of qemu-system-x86_64, with an install hint when it is missing.

    ``$VHBA_LAB_QEMU`` names another one (e.g. a newer QEMU unpacked beside
    the host's, behind a wrapper that adds its ``-L`` firmware paths).
    """
    chosen = os.environ.get(QEMU_ENV_VAR)
    if chosen:
        if not (Path(chosen).is_file() and os.access(chosen, os.X_OK)):
            raise UsageError(
                f"{QEMU_ENV_VAR}={chosen} is not an executable file: point it at a "
                "qemu-system-x86_64 or unset it"
            )
        return chosen
    found = shutil.which("qemu-system-x86_64")
    if not found:
        raise UsageError(
            "qemu-system-x86_64 not found: install it (apt-get install qemu-system-x86) "
            "or run the README's set-up command"
        )
    return found


def _cpu_has_virt(cpuinfo: str) -> bool:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"vmx", "svm"})
    return False


def _kvm_starts(qemu: str) -> bool:
    """Start QEMU paused on KVM and ask it over QMP whether KVM is really on."""
    ours, theirs = socket.socketpair()
    cmd = [
        qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-nodefaults",
        "-display", "none", "-S",
        "-chardev", f"socket,id=qmp,fd={theirs.fileno()}", "-mon", "chardev=qmp,mode=control",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, pass_fds=[theirs.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    theirs.close()
    try:
        qmp = QEMUMonitorProtocol(ours)
        qmp.connect()
        enabled = bool(qmp.cmd("query-kvm").get("enabled"))  # type: ignore[union-attr]
        qmp.cmd("quit")
        qmp.close()
        return enabled
    except Exception:
        return False
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        ours.close()


def choose_accel(
    requested: str | None = None,
    *,
    cpuinfo_path: Path = Path("/proc/cpuinfo"),
    kvm_dev: Path = Path("/dev/kvm"),
) -> AccelChoice:
    """Resolve ``auto``/``kvm``/``tcg`` (argument, then ``$VHBA_LAB_ACCEL``) to an accelerator."""
    wanted = (requested or os.environ.get(ENV_VAR) or "auto").lower()
    if wanted not in CHOICES:
        raise UsageError(f"unknown accelerator {wanted!r}: choose one of {', '.join(CHOICES)}")
    if wanted == "tcg":
        return AccelChoice("tcg", "requested")
    cpuinfo = cpuinfo_path.read_text() if cpuinfo_path.exists() else ""
    problem = None
    if not _cpu_has_virt(cpuinfo):
        problem = "the CPU has no vmx/svm (a paravirtual /dev/kvm cannot boot Debian kernels)"
    elif not os.access(kvm_dev, os.R_OK | os.W_OK):
        problem = f"{kvm_dev} is missing or not read-write for this user"
    elif not _kvm_starts(qemu_binary()):
        problem = "QEMU could not start with -accel kvm"
    if problem is None:
        return AccelChoice("kvm", "hardware virtualisation available")
    if wanted == "kvm":
        raise UsageError(f"KVM requested but unusable: {problem}; use --accel tcg or auto")
    return AccelChoice("tcg", problem)
