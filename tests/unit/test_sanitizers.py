"""Sanitizer reports in kmsg slices and kmemleak read-backs become named findings.

The samples under fixtures/sanitizers are what ``dmesg`` prints on the
debug kernels (timestamps, optional caller ids, continuation lines), each
starting with the harness's test marker and ending with an unrelated line
that must stay out of the report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.cell.sanitizers import MAX_REPORT_LINES, Kind, parse_kmemleak, scan_kmsg

SAMPLES = Path(__file__).parent / "fixtures" / "sanitizers"


def _sample(name: str) -> str:
    return (SAMPLES / name).read_text()


@pytest.mark.parametrize(
    ("sample", "kind", "title", "first", "last"),
    [
        (
            "kasan-uaf-6.12.txt",
            Kind.KASAN,
            "BUG: KASAN: slab-use-after-free in vhba_ctl_read+0x1e4/0x560 [vhba]",
            "=====",
            "=====",
        ),
        (
            "kfence-6.12.txt",
            Kind.KFENCE,
            "BUG: KFENCE: out-of-bounds read in vhba_copy_sense+0x5d/0xa0 [vhba]",
            "=====",
            "=====",
        ),
        (
            "ubsan-6.12.txt",
            Kind.UBSAN,
            "UBSAN: array-index-out-of-bounds in /build/vhba/module/vhba.c:1187:21",
            "[ cut here ]",
            "---[ end trace ]---",
        ),
        (
            "ubsan-5.10.txt",
            Kind.UBSAN,
            "UBSAN: shift-out-of-bounds in /build/vhba/module/vhba.c:402:31",
            "=====",
            "=====",
        ),
        (
            "lockdep-circular-6.12.txt",
            Kind.LOCKDEP,
            "WARNING: possible circular locking dependency detected",
            "=====",
            "</TASK>",
        ),
        (
            "lockdep-recursive-caller-id.txt",
            Kind.LOCKDEP,
            "WARNING: possible recursive locking detected",
            "=====",
            "</TASK>",
        ),
        (
            "atomic-sleep-6.12.txt",
            Kind.ATOMIC_SLEEP,
            "BUG: sleeping function called from invalid context at kernel/locking/mutex.c:585",
            "BUG: sleeping function",
            "</TASK>",
        ),
        (
            "sched-atomic-5.10.txt",
            Kind.ATOMIC_SLEEP,
            "BUG: scheduling while atomic: vhba-responder/412/0x00000002",
            "BUG: scheduling while atomic",
            "R13: ",
        ),
        (
            "hung-task-6.1.txt",
            Kind.HUNG_TASK,
            "INFO: task blkid:1291 blocked for more than 120 seconds.",
            "INFO: task blkid",
            "</TASK>",
        ),
        (
            "soft-lockup-6.12.txt",
            Kind.SOFT_LOCKUP,
            "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [kworker/1:2:233]",
            "watchdog: BUG",
            "</TASK>",
        ),
        (
            "wq-lockup-6.12.txt",
            Kind.WQ_LOCKUP,
            "BUG: workqueue lockup - pool cpus=1 node=0 flags=0x0 nice=0 stuck for 34s!",
            "BUG: workqueue lockup",
            "pool 2: cpus=1",
        ),
        (
            "odebug-6.12.txt",
            Kind.ODEBUG,
            "ODEBUG: free active (active state 0) object: ffff888004e1a2a8 object type: "
            "work_struct hint: vhba_direct_work+0x0/0x90 [vhba]",
            "[ cut here ]",
            "---[ end trace",
        ),
    ],
)
def test_each_report_is_one_finding_with_its_whole_text(
    sample: str, kind: Kind, title: str, first: str, last: str
) -> None:
    text = _sample(sample)
    (finding,) = scan_kmsg(text)
    assert finding.kind is kind
    assert finding.title == title, "the title is the first line without the printk prefix"
    lines = finding.text.splitlines()
    assert first in lines[0] and last in lines[-1]
    # the marker before and the unrelated line after the report stay out of it
    assert "vhba-lab: test start" not in finding.text
    assert text.splitlines()[-1] not in finding.text
    assert finding.text.endswith("\n")
    assert finding.text.splitlines() == text.splitlines()[finding.lines.start : finding.lines.stop]


def test_kasan_report_keeps_its_allocation_and_free_stacks() -> None:
    (finding,) = scan_kmsg(_sample("kasan-uaf-6.12.txt"))
    for part in ("Allocated by task 412:", "Freed by task 418:", "Memory state around"):
        assert part in finding.text
    assert "Disabling lock debugging" not in finding.text  # after the closing rule
    assert finding.headline == finding.title


def test_lockdep_report_runs_past_its_dependency_chain_to_the_backtrace() -> None:
    (finding,) = scan_kmsg(_sample("lockdep-circular-6.12.txt"))
    assert "*** DEADLOCK ***" in finding.text
    assert "print_circular_bug" in finding.text  # the stack backtrace, not just the chain


def test_continuation_lines_and_caller_ids_stay_in_the_report() -> None:
    (finding,) = scan_kmsg(_sample("lockdep-recursive-caller-id.txt"))
    assert "but task is already holding lock:" in finding.text
    assert "[  T412]" in finding.text  # raw text kept, prefix only dropped from the title
    assert "__lock_acquire" in finding.text


def test_reports_in_one_slice_are_separate_and_keep_their_header_rule() -> None:
    text = _sample("kasan-uaf-6.12.txt") + _sample("lockdep-circular-6.12.txt")
    kasan, lockdep = scan_kmsg(text)
    assert (kasan.kind, lockdep.kind) == (Kind.KASAN, Kind.LOCKDEP)
    assert lockdep.text.splitlines()[0].endswith("=" * 54)
    assert kasan.lines.stop <= lockdep.lines.start


def test_a_report_cut_off_by_the_next_one_ends_before_its_header() -> None:
    kasan = _sample("kasan-uaf-6.12.txt").splitlines()
    cut = "\n".join(kasan[:12]) + "\n" + _sample("ubsan-6.12.txt")
    first, second = scan_kmsg(cut)
    assert first.kind is Kind.KASAN and "Call Trace:" in first.text
    assert "cut here" not in first.text
    assert second.kind is Kind.UBSAN and "cut here" in second.text.splitlines()[0]


def test_a_report_truncated_by_the_slice_end_is_still_found() -> None:
    lines = _sample("soft-lockup-6.12.txt").splitlines()[:8]
    (finding,) = scan_kmsg("\n".join(lines))
    assert finding.kind is Kind.SOFT_LOCKUP and finding.lines.stop == 8


def test_a_runaway_report_is_capped() -> None:
    head = "[    1.000000] ==================================================================\n"
    title = "[    1.000001] BUG: KASAN: slab-out-of-bounds in vhba_x+0x1/0x2 [vhba]\n"
    body = "".join(f"[    1.{i:06d}]  frame_{i}+0x1/0x2\n" for i in range(2, 2000))
    (finding,) = scan_kmsg(head + title + body)
    assert len(finding.text.splitlines()) == MAX_REPORT_LINES + 1  # with its header rule


@pytest.mark.parametrize(
    "line",
    [
        "[    3.101010] WARNING: CPU: 0 PID: 1 at drivers/scsi/sr.c:101 sr_probe+0x1/0x2",
        "[    3.101010] BUG: unable to handle page fault for address: ffffffffffffffe8",
        "[    3.101010] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
        "[    3.101010] kmemleak: unreferenced object 0xffff888005d3c600 (size 192):",
        "[    3.101010] ODEBUG: selftest passed",
        "[    3.101010] sr 2:0:0:0: [sr0] tag#0 UBSAN: not at the start of the line",
        "[    3.101010] vhba-lab: test start spc/test_inquiry 1.0",
    ],
)
def test_ordinary_lines_are_not_findings(line: str) -> None:
    """Generic BUG/WARNING lines stay with the old health check; kmemleak comes from its file."""
    assert scan_kmsg(line + "\n") == []


def test_old_ubsan_wording_is_recognised() -> None:
    rule = "=" * 80
    text = (
        f"[   12.000000] {rule}\n"
        "[   12.000001] UBSAN: Undefined behaviour in drivers/scsi/vhba.c:402:31\n"
        "[   12.000002] shift exponent 64 is too large for 64-bit type 'long unsigned int'\n"
        f"[   12.000003] {rule}\n"
    )
    (finding,) = scan_kmsg(text)
    assert finding.kind is Kind.UBSAN and finding.lines == range(0, 4)


def test_every_kind_has_a_label() -> None:
    assert {k.value for k in Kind} == {
        "kasan", "kfence", "ubsan", "lockdep", "atomic_sleep", "kmemleak",
        "hung_task", "soft_lockup", "wq_lockup", "odebug",
    }  # fmt: skip
    assert Kind.KASAN.label == "KASAN" and Kind.HUNG_TASK.label == "HUNG TASK"


# -- kmemleak read-back ------------------------------------------------------------


def test_kmemleak_read_back_is_one_finding_per_object() -> None:
    first, second = parse_kmemleak(_sample("kmemleak-readback.txt"))
    assert first.kind is Kind.KMEMLEAK
    assert first.title == "unreferenced object 0xffff888005d3c600 (size 192)"
    assert first.headline == "kmemleak: unreferenced object 0xffff888005d3c600 (size 192)"
    assert 'comm "vhba-responder", pid 412' in first.text
    assert "vhba_add_device+0x54/0x2f0 [vhba]" in first.text
    assert "0xffff888004b7e880" not in first.text
    assert second.title == "unreferenced object 0xffff888004b7e880 (size 64)"
    assert second.text.splitlines()[-1].endswith("entry_SYSCALL_64_after_hwframe+0x76/0x7e")


def test_empty_kmemleak_read_back_has_no_findings() -> None:
    assert parse_kmemleak("") == []
    assert parse_kmemleak("\n") == []
