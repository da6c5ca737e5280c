"""Naming a lost guest: harness trouble is ERROR, a kernel report with the module in is FAIL."""

from __future__ import annotations

from lab.cell.state import CellLoss, LossKind, classify_loss, kernel_complaint
from lab.report.results import Status

PANIC = """\
[  812.000000] BUG: unable to handle page fault for address: ffffc90000a3f000
[  812.000100] Oops: 0002 [#1] PREEMPT SMP NOPTI
[  812.000200] RIP: 0010:vhba_ctl_write+0x1e4/0x560 [vhba]
[  812.000300] Kernel panic - not syncing: Fatal exception
"""
STALL_WITHOUT_VHBA = """\
[  900.000000] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [kworker/1:2:77]
[  900.000100] RIP: 0010:native_safe_halt+0xb/0x10
"""
STALL_IN_VHBA = """\
[  900.000000] INFO: task scsi_eh_2:311 blocked for more than 30 seconds.
[  900.000100]  vhba_abort+0x90/0x120 [vhba]
"""


def test_a_panic_after_the_module_is_in_blames_the_module() -> None:
    loss = classify_loss(PANIC, None, module_loaded=True, seen="EOFError()")
    assert loss.kind is LossKind.PANIC
    assert not loss.infrastructure and loss.status is Status.FAIL
    # The first kernel line of the report names it; the harness's view is kept.
    assert loss.cause.startswith("[  812.000000] BUG: unable to handle page fault")
    assert "EOFError()" in loss.cause
    assert loss.message.startswith("PANIC: ")


def test_a_panic_before_the_module_is_infrastructure() -> None:
    loss = classify_loss(PANIC, 0, module_loaded=False, seen="boot")
    assert loss.kind is LossKind.PANIC and loss.infrastructure and loss.status is Status.ERROR


def test_a_stall_alone_is_not_a_module_verdict_but_one_in_vhba_is() -> None:
    plain = classify_loss(STALL_WITHOUT_VHBA, None, module_loaded=True, seen="x")
    assert plain.kind is LossKind.HANG and plain.status is Status.ERROR
    ours = classify_loss(STALL_IN_VHBA, None, module_loaded=True, seen="x")
    assert ours.kind is LossKind.HANG and ours.status is Status.FAIL


def test_a_silent_death_names_how_qemu_ended() -> None:
    killed = classify_loss("[ 10.0] sr 2:0:0:0: ok\n", -9, module_loaded=True, seen="x")
    assert killed.kind is LossKind.QEMU_EXIT and killed.status is Status.ERROR
    assert "signal 9" in killed.cause
    assert "code 1" in classify_loss("", 1, True, "x").cause
    silent = classify_loss("", None, module_loaded=True, seen="SSHException('x')")
    assert silent.kind is LossKind.NO_ANSWER and silent.status is Status.ERROR
    assert "SSHException('x')" in silent.cause


def test_no_complaint_in_an_ordinary_log() -> None:
    assert kernel_complaint("[ 1.0] sr 2:0:0:0: [sr0] scsi3-mmc drive\n") is None


def test_json_round_trip() -> None:
    for loss in (
        CellLoss(LossKind.BOOT, "the guest failed to come up twice", module_loaded=False),
        CellLoss(LossKind.HANG, "stall", module_loaded=True, blames_module=True),
    ):
        data = loss.to_json()
        assert data["infrastructure"] is loss.infrastructure
        assert CellLoss.from_json(data) == loss
