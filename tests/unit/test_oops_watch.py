"""An oops on the serial console ends a long guest command at once (lab/vm: Machine, OopsWatch)."""

from __future__ import annotations

import time

import pytest

from lab.errors import GuestLostError
from lab.vm.guest import OopsWatch
from lab.vm.machine import oops_line

# As a 6.16 guest printed it while the suite wrote a big file onto UDF.
OOPS = """\
[  108.340649] UDF-fs: INFO Mounting volume 'VHBALAB_DVD', timestamp 2026/12/06 16:27 (1000)
[  126.656413] BUG: kernel NULL pointer dereference, address: 0000000000000010
[  126.662506] #PF: supervisor read access in kernel mode
[  126.662839] PGD 31aa067 P4D 2f17067 PUD 2c94067 PMD 0
[  126.665455] Oops: Oops: 0000 [#1] SMP NOPTI
[  126.665988] CPU: 1 UID: 0 PID: 938 Comm: python3 Tainted: G           OE       6.16.12
"""
KASAN = """\
[   55.1] ==================================================================
[   55.1] BUG: KASAN: slab-use-after-free in sr_packet+0x14c/0x160
[   55.2] Read of size 8 at addr ffff888005dd5900 by task sh/1000
[   55.3] ==================================================================
"""
WARNING = "[ 3.0] WARNING: CPU: 1 PID: 9 at drivers/scsi/x.c:1 f+0x1/0x2\n"


def test_an_oops_is_named_by_the_line_that_says_what_died() -> None:
    assert (
        oops_line(OOPS)
        == "[  126.656413] BUG: kernel NULL pointer dereference, address: 0000000000000010"
    )
    old_style = "[ 9.0] general protection fault: 0000 [#1] SMP PTI\n"
    assert oops_line(old_style) == old_style.strip()
    assert oops_line("[ 2.0] Kernel panic - not syncing: Fatal exception\n") is not None


def test_sanitizer_reports_and_warnings_are_no_oops() -> None:
    assert oops_line(KASAN) is None
    assert oops_line(WARNING) is None
    assert oops_line("") is None


def test_the_watch_looks_only_once_a_command_ran_long_and_then_says_what_died() -> None:
    looked: list[float] = []

    def oopsed() -> str | None:
        looked.append(time.monotonic())
        return "BUG: kernel NULL pointer dereference" if len(looked) > 1 else None

    watch = OopsWatch(oopsed, after=0.2)
    assert watch.lost("mkudffs ...") is None and not looked, "a short command is never watched"
    time.sleep(0.25)
    assert watch.lost("mkudffs ...") is None and len(looked) == 1
    assert watch.lost("mkudffs ...") is None and len(looked) == 1, "not again before 5 s"
    watch.next_look = 0.0
    lost = watch.lost("python3 bigfile.py write ...")
    assert isinstance(lost, GuestLostError)
    assert "oopsed" in str(lost) and "NULL pointer" in str(lost) and "bigfile.py" in str(lost)
    assert OopsWatch(None, after=0.0).lost("x") is None


@pytest.mark.parametrize("text", [OOPS, KASAN + OOPS])
def test_a_sanitizer_report_before_an_oops_does_not_hide_it(text: str) -> None:
    assert "NULL pointer" in (oops_line(text) or "")
