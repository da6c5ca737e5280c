"""One QEMU guest: command line, process, QMP, serial log, snapshots, shutdown.

The command line is an argument list (never a shell string) so it can be shown
to a user verbatim with ``shlex.join``.  QMP runs over a ``socketpair`` handed
to QEMU as an fd, so there is no socket path to race on.  QEMU is started with
``PR_SET_PDEATHSIG`` so it dies with the lab even on ``kill -9``; a normal
exit, Ctrl-C or an exception shut it down through the context manager.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import logging
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from lab.errors import BootTimeoutError, MachineError
from lab.vm.accel import AccelChoice, qemu_binary

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL QEMU when the lab process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"
    BROKEN = "broken"


@dataclass
class MachineSpec:
    """Everything that determines a guest's QEMU command line."""

    kernel: Path
    initrd: Path
    disk: Path  # a per-run qcow2 overlay, never the cached base image
    workdir: Path
    accel: AccelChoice
    cmdline: str = ""
    memory_mb: int = 2048
    cpus: int = 2
    ssh_port: int = 0  # 0: pick a free loopback port at launch
    loadvm: str | None = None  # restore this internal snapshot of ``disk`` at start
    extra_args: list[str] = field(default_factory=list)

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"


BASE_CMDLINE = (
    "root=/dev/vda rw console=ttyS0,115200 ignore_loglevel panic=-1 "
    "net.ifnames=0 systemd.show_status=0 mitigations=off"
)


class Machine:
    """A QEMU process driven through QMP; use as a context manager."""

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec
        self.state = RunState.NEW
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self._qmp_peer: socket.socket | None = None

    # -- command line -------------------------------------------------------
    def command(self, qmp_fd: int | None = None) -> list[str]:
        spec = self.spec
        port = spec.ssh_port
        args = [
            qemu_binary(),
            "-machine", "q35",
            *spec.accel.qemu_args(),
            "-smp", str(spec.cpus),
            "-m", str(spec.memory_mb),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(spec.kernel),
            "-initrd", str(spec.initrd),
            "-append", f"{BASE_CMDLINE} {spec.cmdline}".strip(),
            "-drive", f"file={spec.disk},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
            # A reference drive for differential tests: QEMU's own scsi-cd, empty until
            # change_medium() inserts the same ISO our responder serves.
            "-device", "virtio-scsi-pci,id=scsi0",
            "-drive", "if=none,id=refcd,media=cdrom,readonly=on",
            "-device", "scsi-cd,bus=scsi0.0,drive=refcd,id=refcd-dev,vendor=QEMU",
            "-serial", f"file:{spec.serial_log}",
        ]  # fmt: skip
        if spec.loadvm:
            args += ["-loadvm", spec.loadvm]
        if qmp_fd is not None:
            args += ["-chardev", f"socket,id=qmp,fd={qmp_fd}", "-mon", "chardev=qmp,mode=control"]
        return args + spec.extra_args

    def show_command(self) -> str:
        """The command line a user can paste (QMP omitted: it is an inherited fd)."""
        return shlex.join(self.command())

    # -- lifecycle ------------------------------------------------------------
    def launch(self) -> None:
        if self.state is not RunState.NEW:
            raise MachineError(f"cannot launch a machine in state {self.state.value}")
        self.spec.workdir.mkdir(parents=True, exist_ok=True)
        if not self.spec.ssh_port:
            self.spec.ssh_port = free_port()
        ours, theirs = socket.socketpair()
        cmd = self.command(theirs.fileno())
        (self.spec.workdir / "qemu-command.txt").write_text(shlex.join(cmd) + "\n")
        log.debug("launching %s", shlex.join(cmd))
        with self.spec.qemu_log.open("wb") as qlog:
            self._proc = subprocess.Popen(
                cmd,
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=qlog,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        theirs.close()
        self._qmp_peer = ours
        try:
            self._qmp = QEMUMonitorProtocol(ours)
            self._qmp.settimeout(30)
            self._qmp.connect()
        except Exception as exc:
            self.kill()
            self.state = RunState.BROKEN
            raise MachineError(
                f"QEMU did not start: {self.qemu_output().strip() or exc}; "
                f"command in {self.spec.workdir / 'qemu-command.txt'}"
            ) from exc
        self.state = RunState.RUNNING

    def __enter__(self) -> Machine:
        self.launch()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def qemu_output(self) -> str:
        try:
            return self.spec.qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def qmp(self, command: str, **args: object) -> object:
        if self._qmp is None or self.state is not RunState.RUNNING:
            raise MachineError(f"QMP unavailable in state {self.state.value}")
        return self._qmp.cmd(command, **args)

    def hmp(self, command_line: str) -> str:
        """Run a human-monitor command (savevm/loadvm have no QMP form in QEMU 7.2)."""
        out = self.qmp("human-monitor-command", **{"command-line": command_line})
        return str(out)

    def savevm(self, tag: str) -> None:
        """Store the running guest (RAM + devices + disk) as an internal qcow2 snapshot."""
        out = self.hmp(f"savevm {tag}").strip()
        if out:
            raise MachineError(f"savevm {tag} failed: {out}")

    def change_medium(self, image: Path | None) -> None:
        """Insert ``image`` into the reference scsi-cd (None: eject it)."""
        # Force the old disc out first: udev keeps a loaded disc locked (cdrom_id).
        with contextlib.suppress(Exception):
            self.qmp("eject", id="refcd-dev", force=True)
        if image is not None:
            self.qmp(
                "blockdev-change-medium",
                id="refcd-dev",
                filename=str(image),
                format="raw",
                **{"read-only-mode": "read-only"},
            )

    def poweroff(self, timeout: float = 120.0) -> bool:
        """Ask the guest to power off (ACPI) and wait; True if it did so cleanly in time."""
        if not self.is_running():
            return False
        with contextlib.suppress(Exception):
            self.qmp("system_powerdown")
        assert self._proc is not None
        try:
            self._proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def shutdown(self, timeout: float = 20.0) -> None:
        """Power off gracefully, then ``quit``, then kill; always reap the process."""
        if self._proc is None:
            return
        try:
            if self.is_running() and self._qmp is not None:
                with contextlib.suppress(Exception):
                    self._qmp.cmd("quit")
                try:
                    self._proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("QEMU ignored quit; killing it")
        finally:
            self.kill()
            if self._qmp is not None:
                with contextlib.suppress(Exception):
                    self._qmp.close()
            if self._qmp_peer is not None:
                self._qmp_peer.close()
            self._qmp = None
            self._qmp_peer = None
            if self.state is not RunState.BROKEN:
                self.state = RunState.STOPPED

    def kill(self) -> None:
        """SIGKILL QEMU (if it still runs) and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait()

    def serial_tail(self, lines: int = 30) -> str:
        try:
            text = self.spec.serial_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def panic_line(self) -> str | None:
        """The kernel's panic message from the serial log, if it panicked."""
        try:
            text = self.spec.serial_log.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if "Kernel panic" in line:
                return line.strip()
        return None

    def serial_mark(self) -> int:
        """Where the serial log ends now: what :meth:`oops_since` reads from."""
        try:
            return self.spec.serial_log.stat().st_size
        except OSError:
            return 0

    def oops_since(self, mark: int) -> str | None:
        """The first line of a kernel oops or panic the serial log shows after ``mark``.

        An oops (die(): "... [#1]") kills the task it hit and often leaves
        locks held, so a command can wait for good on a kernel that will not
        recover; a sanitizer report or a WARNING is no oops (the health
        checks judge those).
        """
        try:
            with self.spec.serial_log.open("rb") as log:
                log.seek(mark)
                text = log.read().decode(errors="replace")
        except OSError:
            return None
        return oops_line(text)

    def wait_until(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``probe()`` until true; fail early if QEMU exits (panic => -no-reboot exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                panic = self.panic_line()
                raise MachineError(
                    f"QEMU exited (code {self.exit_code()}) before {what}"
                    f"{': ' + panic if panic else ''}; "
                    f"serial log {self.spec.serial_log}:\n{self.serial_tail()}"
                )
            if probe():
                return
            time.sleep(0.5)
        raise BootTimeoutError(
            f"guest not {what} after {timeout:.0f} s; killed it, serial log kept at "
            f"{self.spec.serial_log}:\n{self.serial_tail()}"
        )


# die()'s banner ("Oops: 0000 [#1] SMP", "general protection fault: 0000 [#1]")
# and a panic; and the lines that name what died, just before the banner.
_DIED = re.compile(r"\[#\d+\]|Kernel panic - not syncing")
_WHAT_DIED = re.compile(r"BUG: |general protection fault|kernel BUG at|Kernel panic")


def oops_line(serial: str) -> str | None:
    """The line that names the first oops or panic in ``serial`` (None: there is none)."""
    lines = serial.splitlines()
    for n, line in enumerate(lines):
        if _DIED.search(line):
            for before in lines[max(0, n - 4) : n + 1]:
                if _WHAT_DIED.search(before):
                    return before.strip()
            return line.strip()
    return None
