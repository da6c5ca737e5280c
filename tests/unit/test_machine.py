"""The QEMU command line and accelerator choice (pure logic: no QEMU is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import UsageError
from lab.vm.accel import AccelChoice, choose_accel, qemu_binary
from lab.vm.machine import Machine, MachineSpec


def _spec(tmp_path: Path, **kw: object) -> MachineSpec:
    return MachineSpec(
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd.img",
        disk=tmp_path / "disk.qcow2",
        workdir=tmp_path / "run",
        accel=AccelChoice("tcg", "test"),
        ssh_port=2222,
        **kw,  # type: ignore[arg-type]
    )


def _value(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_command_line_boots_the_overlay_directly(tmp_path: Path) -> None:
    args = Machine(_spec(tmp_path)).command()
    assert _value(args, "-kernel") == [str(tmp_path / "vmlinuz")]
    assert _value(args, "-initrd") == [str(tmp_path / "initrd.img")]
    (drive,) = [d for d in _value(args, "-drive") if d.startswith("file=")]
    assert drive.startswith(f"file={tmp_path / 'disk.qcow2'},")
    assert "format=qcow2" in drive
    assert "-no-reboot" in args, "a panicking guest must make QEMU exit, not loop"
    (append,) = _value(args, "-append")
    assert "console=ttyS0" in append and "panic=-1" in append and "root=/dev/vda" in append


def test_reference_scsi_cd_starts_empty(tmp_path: Path) -> None:
    args = Machine(_spec(tmp_path)).command()
    assert "if=none,id=refcd,media=cdrom,readonly=on" in _value(args, "-drive")
    assert any(d.startswith("scsi-cd,") for d in _value(args, "-device"))


def test_ssh_is_forwarded_on_loopback_only(tmp_path: Path) -> None:
    (netdev,) = _value(Machine(_spec(tmp_path)).command(), "-netdev")
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev


def test_serial_console_goes_to_a_file_in_the_run_dir(tmp_path: Path) -> None:
    (serial,) = _value(Machine(_spec(tmp_path)).command(), "-serial")
    assert serial == f"file:{tmp_path / 'run' / 'serial.log'}"


def test_tcg_and_kvm_arguments(tmp_path: Path) -> None:
    tcg = Machine(_spec(tmp_path)).command()
    assert _value(tcg, "-accel")[0].startswith("tcg")
    assert _value(tcg, "-cpu") == ["max"]
    spec = _spec(tmp_path)
    spec.accel = AccelChoice("kvm", "test")
    kvm = Machine(spec).command()
    assert _value(kvm, "-accel") == ["kvm"]
    assert _value(kvm, "-cpu") == ["host"]


def test_loadvm_and_qmp_fd(tmp_path: Path) -> None:
    args = Machine(_spec(tmp_path, loadvm="ready")).command(qmp_fd=7)
    assert _value(args, "-loadvm") == ["ready"]
    assert "socket,id=qmp,fd=7" in _value(args, "-chardev")
    assert "-loadvm" not in Machine(_spec(tmp_path)).command()


def test_show_command_is_pasteable(tmp_path: Path) -> None:
    shown = Machine(_spec(tmp_path, cmdline="quiet extra='a b'")).show_command()
    assert "'root=/dev/vda" in shown and "qmp" not in shown


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    return path


def test_no_vmx_or_svm_means_tcg_even_with_dev_kvm(tmp_path: Path) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    choice = choose_accel("auto", cpuinfo_path=_cpuinfo(tmp_path, "avx2"), kvm_dev=kvm)
    assert choice.name == "tcg"
    assert "vmx/svm" in choice.reason


def test_kvm_demanded_but_unusable_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="KVM requested but unusable"):
        choose_accel("kvm", cpuinfo_path=_cpuinfo(tmp_path, "avx2"), kvm_dev=tmp_path / "nokvm")


def test_missing_kvm_device_with_vmx_falls_back(tmp_path: Path) -> None:
    choice = choose_accel("auto", cpuinfo_path=_cpuinfo(tmp_path, "vmx"), kvm_dev=tmp_path / "no")
    assert choice.name == "tcg" and "missing" in choice.reason


def test_accel_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VHBA_LAB_ACCEL", "tcg")
    assert choose_accel(None).name == "tcg"
    monkeypatch.setenv("VHBA_LAB_ACCEL", "hvf")
    with pytest.raises(UsageError, match="choose one of auto, kvm, tcg"):
        choose_accel(None)


def test_qemu_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text("#!/bin/sh\n")
    monkeypatch.setenv("VHBA_LAB_QEMU", str(wrapper))
    with pytest.raises(UsageError, match="not an executable file"):
        qemu_binary()
    wrapper.chmod(0o755)
    assert qemu_binary() == str(wrapper)
