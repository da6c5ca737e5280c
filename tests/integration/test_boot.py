"""Boot real Debian kernels in QEMU and drive them (issue: lab foundation)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.build.images import Image
from lab.catalogue.kernels import KernelEntry
from lab.context import LabContext
from lab.errors import BootTimeoutError, MachineError
from lab.vm.guest import command_text
from lab.vm.machine import Machine, MachineSpec
from lab.vm.session import BootRetried, boot
from tests.contract.guest_channel import check_channel

pytestmark = pytest.mark.integration
VHBA_LAB = [sys.executable, "-m", "lab.cli"]


def test_cold_boot_runs_the_kernel_and_logs_the_serial_console(
    lab: LabContext, reference_image: Image, reference_kernel: KernelEntry, tmp_path: Path
) -> None:
    with boot(reference_image, tmp_path, lab.accel, warm=False) as booted:
        release = booted.guest.run(["uname", "-r"]).stdout.strip()
        assert release == reference_kernel.abi
        udevd = booted.guest.run(["systemctl", "is-active", "systemd-udevd"], check=False)
        assert udevd.stdout.strip() == "active"
    serial = (tmp_path / "serial.log").read_text(errors="replace")
    assert f"Linux version {reference_kernel.abi}" in serial


def test_warm_restore_is_a_working_guest_with_a_current_clock(
    lab: LabContext, reference_image: Image, reference_kernel: KernelEntry, tmp_path: Path
) -> None:
    with boot(reference_image, tmp_path, lab.accel, warm=True) as booted:
        assert booted.warm
        out = booted.guest.sh("uname -r; date +%s").stdout.split()
        assert out[0] == reference_kernel.abi
        assert abs(int(out[1]) - time.time()) < 30, "guest clock not reset after restore"
        # Every run gets its own disk: writing here must not leak into the next run.
        booted.guest.run(["touch", "/root/leak-check"])
    with boot(reference_image, tmp_path / "again", lab.accel, warm=True) as booted:
        assert booted.guest.run(["test", "-e", "/root/leak-check"], check=False).rc != 0


def test_the_real_channel_keeps_the_guest_contract(
    lab: LabContext, reference_image: Image, tmp_path: Path
) -> None:
    with boot(reference_image, tmp_path, lab.accel, warm=True) as booted:
        # An oops as the serial console shows it, printed by the guest's kernel
        # (at KERN_EMERG, which every console prints) without killing anything.
        banner = "".join(
            f"echo {command_text([line])} > /dev/kmsg; "
            for line in ("<0>BUG: kernel NULL pointer dereference (the contract's test)",
                         "<0>Oops: 0000 [#1] SMP (the contract's test)")
        )  # fmt: skip
        check_channel(
            booted.guest, "/tmp", kill=booted.machine.kill, oops=lambda: booted.guest.sh(banner)
        )


def _broken_guest(reference_image: Image, tmp_path: Path, lab: LabContext, init: str) -> Machine:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
         str(reference_image.disk), str(tmp_path / "disk.qcow2")],
        check=True,
    )  # fmt: skip
    spec = MachineSpec(
        kernel=reference_image.kernel, initrd=reference_image.initrd,
        disk=tmp_path / "disk.qcow2", workdir=tmp_path, accel=lab.accel,
        cmdline=f"init={init}",
    )  # fmt: skip
    machine = Machine(spec)
    machine.launch()
    return machine


def test_hung_guest_is_killed_after_the_timeout_and_its_log_kept(
    lab: LabContext, reference_image: Image, tmp_path: Path
) -> None:
    # A shell on the (input-less) console as init: the kernel boots, then nothing answers.
    machine = _broken_guest(reference_image, tmp_path, lab, "/bin/sh")
    try:
        with pytest.raises(BootTimeoutError, match="serial log kept"):
            machine.wait_until(lambda: False, 25, "reachable over ssh")
    finally:
        machine.shutdown()
    assert not machine.is_running()
    assert "Linux version" in (tmp_path / "serial.log").read_text(errors="replace")


def test_guest_panic_ends_the_wait_at_once_with_the_panic_in_the_error(
    lab: LabContext, reference_image: Image, tmp_path: Path
) -> None:
    # init exits at once: "Attempted to kill init", panic=-1 and -no-reboot end QEMU.
    machine = _broken_guest(reference_image, tmp_path, lab, "/bin/false")
    started = time.monotonic()
    try:
        with pytest.raises(MachineError, match="QEMU exited") as caught:
            machine.wait_until(lambda: False, 240, "reachable over ssh")
    finally:
        machine.shutdown()
    assert time.monotonic() - started < 200, "a panic must not wait for the boot timeout"
    assert "Kernel panic" in str(caught.value)


def test_shell_command_runs_in_the_guest_and_returns_its_exit_code(
    reference_kernel: KernelEntry, reference_image: Image
) -> None:
    out = subprocess.run([*VHBA_LAB, "shell", "--kernel", reference_kernel.series, "--",
                          "uname", "-r"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == reference_kernel.abi
    failing = subprocess.run(
        [*VHBA_LAB, "shell", "--kernel", reference_kernel.series, "--", "sh", "-c", "exit 7"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert failing.returncode == 7


def test_unknown_kernel_is_a_one_line_error_listing_valid_names() -> None:
    out = subprocess.run([*VHBA_LAB, "shell", "--kernel", "nonsense", "--", "true"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "unknown kernel 'nonsense'" in lines[0] and "6.12" in lines[0]
    assert "Traceback" not in out.stderr


def test_an_early_boot_panic_is_retried_once_on_a_fresh_overlay(
    lab: LabContext, reference_image: Image, reference_kernel: KernelEntry, tmp_path: Path
) -> None:
    # The first attempt's init exits at once (a kernel panic before userspace);
    # the retry boots normally: one boot, one named retry, the failed log kept.
    def first_panics(attempt: int) -> str:
        return "init=/bin/false" if attempt == 1 else ""

    with (
        pytest.warns(BootRetried, match="boot attempt 1 .* failed before ssh"),
        boot(reference_image, tmp_path, lab.accel, fault_args=first_panics) as booted,
    ):
        assert booted.guest.run(["uname", "-r"]).stdout.strip() == reference_kernel.abi
        (retry,) = booted.retried
    assert retry.startswith("attempt 1: ") and "Kernel panic" in retry, retry
    assert "Attempted to kill init" in (tmp_path / "serial-attempt1.log").read_text()
    assert "Kernel panic" not in (tmp_path / "serial.log").read_text(errors="replace")


def test_a_repeated_early_boot_panic_fails_once_naming_both_serial_logs(
    lab: LabContext, reference_image: Image, tmp_path: Path
) -> None:
    def always_panics(attempt: int) -> str:
        return "init=/bin/false"

    with (
        pytest.raises(MachineError, match="failed to come up twice") as caught,
        pytest.warns(BootRetried),
        boot(reference_image, tmp_path, lab.accel, fault_args=always_panics),
    ):
        raise AssertionError("a guest whose init exits must never be handed out")
    message = str(caught.value)
    assert "attempt 1: " in message and "attempt 2: " in message and "Kernel panic" in message
    for log in ("serial-attempt1.log", "serial.log"):
        assert "Attempted to kill init" in (tmp_path / log).read_text(errors="replace"), log
    assert not (tmp_path / "disk.qcow2").exists(), "a failed boot leaves no disk behind"
