"""The per-test kernel health check must actually flag a bad kernel log and new taint,
and name a debug kernel's sanitizer reports (saved one file each) instead."""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lab.cell.health import KMEMLEAK_PROBE, KMEMLEAK_SCAN, MAX_SAVED_FINDINGS, Health, KernelHealth
from lab.cell.sanitizers import Kind
from lab.vm.guest import CommandChannel, CommandResult

SAMPLES = Path(__file__).parent / "fixtures" / "sanitizers"


@dataclass
class FakeGuest(CommandChannel):
    dmesg: str
    taint: int
    ran: list[str] = field(default_factory=list)
    kmemleak: str | None = None  # None: the kernel has none; else what a read-back returns
    kmemleak_rc: int = 0
    baseline: str = ""

    def sh(
        self, cmd: str, timeout: float = 0, check: bool = True, stdin: bytes | None = None
    ) -> CommandResult:
        """Answers the health commands: taint (+ marker), taint + dmesg from the marker,
        and kmemleak's probe and scans."""
        self.ran.append(cmd)
        if cmd == KMEMLEAK_PROBE:
            state = "absent\n" if self.kmemleak is None else f"present\n{self.baseline}"
            return CommandResult(cmd, 0, state, "")
        if cmd == KMEMLEAK_SCAN:
            assert self.kmemleak is not None, "scanned a kernel without kmemleak"
            return CommandResult(cmd, self.kmemleak_rc, self.kmemleak, "sh: echo: I/O error")
        out = f"{self.taint}\n"
        grep = re.search(r"grep -F -A 1000000((?: -e '[^']*')+)", cmd)  # markers: quoted
        if grep:
            markers = shlex.split(grep.group(1))[1::2]
            lines = self.dmesg.splitlines(keepends=True)
            hit = [i for i, line in enumerate(lines) if any(m in line for m in markers)]
            out += "".join(lines[hit[0] :]) if hit else ""
        # what the command writes to /dev/kmsg lands in the log after what it read
        for said in re.findall(r"echo ('[^']*') > /dev/kmsg", cmd):
            self.dmesg += f"[9] {shlex.split(said)[0]}\n"
        return CommandResult(cmd, 0, out, "")


def _cell(tmp_path: Path, guest: FakeGuest, phases: list[str] | None = None) -> KernelHealth:
    """The checks over ``guest``; ``phases`` collects the names of the timed steps."""

    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        if phases is not None:
            phases.append(name)
        yield

    return KernelHealth(lambda: guest, tmp_path, phase)


def _sample(name: str) -> str:
    """A fixture slice with its own marker line replaced by this module's."""
    lines = (SAMPLES / name).read_text().splitlines(keepends=True)
    return f"[    1.000000] {MARK}\n" + "".join(lines[1:])


MARK = "vhba-lab: test start spc/test_x 1.0"


def test_clean_slice_passes_and_is_saved(tmp_path: Path) -> None:
    guest = FakeGuest(f"[1] old WARNING: before\n[2] {MARK}\n[3] sr 0:0:0:0: ok\n", 4096)
    problem = _cell(tmp_path, guest).end(Health(MARK, 0), tmp_path / "d.txt").problem
    assert problem is None, "the out-of-tree taint bit and lines before the marker are expected"
    assert "sr 0:0:0:0: ok" in (tmp_path / "d.txt").read_text()


def test_warning_after_the_marker_fails(tmp_path: Path) -> None:
    guest = FakeGuest(f"[2] {MARK}\n[3] WARNING: CPU: 0 PID: 1 at vhba.c:10\n", 0)
    problem = _cell(tmp_path, guest).end(Health(MARK, 0), tmp_path / "d.txt").problem
    assert problem is not None and "WARNING: CPU" in problem


def test_get_event_tur_disagreement_fails(tmp_path: Path) -> None:
    guest = FakeGuest(f"{MARK}\nsr0: GET_EVENT and TUR disagree continuously\n", 0)
    assert _cell(tmp_path, guest).end(Health(MARK, 0), tmp_path / "d.txt").problem


def test_new_taint_bit_fails(tmp_path: Path) -> None:
    guest = FakeGuest(f"{MARK}\n", 4096 | 512)  # 512 = TAINT_WARN
    problem = _cell(tmp_path, guest).end(Health(MARK, 4096), tmp_path / "d.txt").problem
    assert problem is not None and "0x200" in problem


def test_taint_a_test_was_blamed_for_is_remembered(tmp_path: Path) -> None:
    """The whole-cell taint check must not blame a kernel bug's taint twice (KASAN sets B)."""
    health = _cell(tmp_path, FakeGuest(f"{MARK}\n", 4096 | 32))
    assert health.attributed_taint == 0
    health.end(Health(MARK, 4096), tmp_path / "d.txt")
    assert health.attributed_taint == 32


def test_start_marks_the_log_and_reads_taint_in_one_round_trip(tmp_path: Path) -> None:
    guest = FakeGuest("", 4096)
    env = _cell(tmp_path, guest)
    env.start("spc/test_w")
    assert guest.ran[0] == KMEMLEAK_PROBE, "a cell's first check asks for kmemleak, once"
    guest.ran.clear()
    health = env.start("spc/test_x")
    assert health.taint_before == 4096
    assert health.marker.startswith("vhba-lab: test start spc/test_x")
    assert len(guest.ran) == 1 and "/dev/kmsg" in guest.ran[0]


def test_only_the_end_check_reads_the_log_window_and_slice_together(tmp_path: Path) -> None:
    """dmesg costs ~0.1 s a call under TCG: the start only marks, the end reads once."""
    guest = FakeGuest("", 0)
    env = _cell(tmp_path, guest)
    _one_test(env, "spc/test_w", tmp_path)
    guest.dmesg += "[8] sr 0:0:0:0: a teardown's line\n"
    guest.ran.clear()
    health = env.start("spc/test_x")
    assert "dmesg" not in guest.ran[0], "the start check reads no log"
    env.end(health, tmp_path / "tests" / "spc__test_x" / "dmesg.txt")
    assert sum("dmesg" in cmd for cmd in guest.ran) == 1
    assert health.between is not None and "a teardown's line" in health.between
    assert "test start spc/test_x" not in health.between


def test_lost_marker_fails(tmp_path: Path) -> None:
    """A log without the marker (ring buffer wrapped, guest rebooted) is not a clean slice."""
    guest = FakeGuest("[1] something else\n", 0)
    problem = _cell(tmp_path, guest).end(Health(MARK, 0), tmp_path / "d.txt").problem
    assert problem is not None and "marker is gone" in problem


# -- ordinary kernels: exactly the old verdicts ------------------------------------------


def test_ordinary_kernel_verdict_is_unchanged(tmp_path: Path) -> None:
    guest = FakeGuest(f"[2] {MARK}\n[3] WARNING: CPU: 0 PID: 1 at vhba.c:10\n", 4096 | 512)
    env = _cell(tmp_path, guest)
    env.start("spc/test_x")
    guest.ran.clear()
    verdict = env.end(Health(MARK, 4096), tmp_path / "d.txt")
    assert verdict.problem == (
        "kernel log: [3] WARNING: CPU: 0 PID: 1 at vhba.c:10; "
        "kernel became tainted (new bits 0x200)"
    )
    assert verdict.findings == () and verdict.artifacts == {}
    assert len(guest.ran) == 1, "no kmemleak scan on a kernel without kmemleak"
    assert env.kmemleak is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.txt"]


# -- sanitizer reports in the slice -------------------------------------------------------


def test_kasan_report_is_a_named_finding_saved_to_its_own_file(tmp_path: Path) -> None:
    guest = FakeGuest(_sample("kasan-uaf-6.12.txt"), 4096 | 32)  # 32 = TAINT_BAD_PAGE
    out = tmp_path / "tests" / "spc__test_x" / "dmesg.txt"
    verdict = _cell(tmp_path, guest).end(Health(MARK, 4096), out)
    (saved,) = verdict.findings
    assert saved.finding.kind is Kind.KASAN
    assert saved.path == out.parent / "sanitizer-1.txt"
    assert verdict.artifacts == {"sanitizer-1": saved.path}
    report = saved.path.read_text()
    assert report.splitlines()[1].endswith(
        "BUG: KASAN: slab-use-after-free in vhba_ctl_read+0x1e4/0x560 [vhba]"
    )
    assert "Freed by task 418:" in report and "sr 2:0:0:0" not in report
    # the title comes first; the report's own BUG line is not repeated as "kernel log: ..."
    assert verdict.problem == (
        "BUG: KASAN: slab-use-after-free in vhba_ctl_read+0x1e4/0x560 [vhba]; "
        "kernel became tainted (new bits 0x20)"
    )


def test_generic_lines_outside_a_report_are_still_reported(tmp_path: Path) -> None:
    text = _sample("ubsan-6.12.txt") + "[   70.000000] WARNING: CPU: 1 PID: 9 at sr.c:5 x+0x1/0x2\n"
    verdict = _cell(tmp_path, FakeGuest(text, 0)).end(Health(MARK, 0), tmp_path / "d.txt")
    assert [s.finding.kind for s in verdict.findings] == [Kind.UBSAN]
    assert verdict.problem is not None
    first, second = verdict.problem.split("; ")
    assert first.startswith("UBSAN: array-index-out-of-bounds in")
    assert second == "kernel log: [   70.000000] WARNING: CPU: 1 PID: 9 at sr.c:5 x+0x1/0x2"


def test_many_reports_are_counted_but_only_some_saved(tmp_path: Path) -> None:
    one = _sample("hung-task-6.1.txt").split("\n", 1)[1]
    text = f"{MARK}\n" + one * (MAX_SAVED_FINDINGS + 3)
    verdict = _cell(tmp_path, FakeGuest(text, 0)).end(Health(MARK, 0), tmp_path / "d.txt")
    assert len(verdict.findings) == MAX_SAVED_FINDINGS
    assert len(list(tmp_path.glob("sanitizer-*.txt"))) == MAX_SAVED_FINDINGS
    assert verdict.problem is not None and "3 more sanitizer reports" in verdict.problem


# -- kmemleak ------------------------------------------------------------------------------


def test_kmemleak_kernel_is_scanned_after_each_test(tmp_path: Path) -> None:
    leaks = (SAMPLES / "kmemleak-readback.txt").read_text()
    guest = FakeGuest(f"{MARK}\n[3] sr 0:0:0:0: ok\n", 0, kmemleak=leaks, baseline="boot leak\n")
    phases: list[str] = []
    env = _cell(tmp_path, guest, phases)
    env.start("spc/test_x")
    assert env.kmemleak is True
    assert (tmp_path / "kmemleak-baseline.txt").read_text() == "boot leak\n"
    out = tmp_path / "tests" / "spc__test_x" / "dmesg.txt"
    verdict = env.end(Health(MARK, 0), out)
    assert guest.ran[-1] == KMEMLEAK_SCAN
    assert [s.finding.kind for s in verdict.findings] == [Kind.KMEMLEAK, Kind.KMEMLEAK]
    assert set(verdict.artifacts) == {"kmemleak", "sanitizer-1", "sanitizer-2"}
    assert verdict.artifacts["kmemleak"].read_text().endswith("\n" + leaks)
    assert "vhba_add_device+0x54/0x2f0" in verdict.findings[0].path.read_text()
    assert verdict.problem == (
        "kmemleak: unreferenced object 0xffff888005d3c600 (size 192); "
        "kmemleak: unreferenced object 0xffff888004b7e880 (size 64)"
    )
    assert "kmemleak_scans" in phases and "health_checks" in phases


def test_clean_kmemleak_scan_passes(tmp_path: Path) -> None:
    guest = FakeGuest(f"{MARK}\n", 0, kmemleak="")
    env = _cell(tmp_path, guest)
    env.start("spc/test_x")
    verdict = env.end(Health(MARK, 0), tmp_path / "d.txt")
    assert verdict.problem is None and verdict.artifacts == {}
    assert not (tmp_path / "kmemleak-baseline.txt").exists()


def test_failing_kmemleak_stops_scanning_without_failing_tests(tmp_path: Path) -> None:
    guest = FakeGuest(f"{MARK}\n", 0, kmemleak="", kmemleak_rc=1)
    env = _cell(tmp_path, guest)
    env.start("spc/test_x")
    assert env.end(Health(MARK, 0), tmp_path / "d.txt").problem is None
    assert env.kmemleak is False
    assert "I/O error" in (tmp_path / "kmemleak-notes.txt").read_text()
    guest.ran.clear()
    env.end(Health(MARK, 0), tmp_path / "d.txt")
    assert KMEMLEAK_SCAN not in guest.ran


def test_kmemleak_scans_once_a_group_and_names_the_tests_it_covers(tmp_path: Path) -> None:
    leaks = (SAMPLES / "kmemleak-readback.txt").read_text()
    guest = FakeGuest("", 0, kmemleak=leaks)
    env = _cell(tmp_path, guest)
    names = ["attacker/test_a", "attacker/test_b", "attacker/test_c"]
    verdicts = []
    for n, name in enumerate(names):
        health = env.start(name)
        out = tmp_path / "tests" / name.replace("/", "__") / "dmesg.txt"
        verdicts.append(env.end(health, out, group_ends=n == len(names) - 1))
    assert guest.ran.count(KMEMLEAK_SCAN) == 1, "one scan, after the group's last test"
    assert verdicts[0].problem is None and verdicts[1].problem is None
    last = verdicts[-1]
    assert [s.finding.kind for s in last.findings] == [Kind.KMEMLEAK, Kind.KMEMLEAK]
    assert last.problem is not None and last.problem.startswith(
        "kmemleak's scan after this test covers the 3 tests since its last one "
        "(attacker/test_a .. attacker/test_c; all in kmemleak.txt)"
    )
    assert "--kmemleak-scans test" in last.problem
    header = last.artifacts["kmemleak"].read_text().splitlines()[0]
    assert header.endswith("attacker/test_a, attacker/test_b, attacker/test_c")
    assert env.unscanned == []


def test_kmemleak_scans_after_every_test_when_asked(tmp_path: Path) -> None:
    leaks = (SAMPLES / "kmemleak-readback.txt").read_text()
    guest = FakeGuest("", 0, kmemleak=leaks)
    env = _cell(tmp_path, guest)
    env.leak_scans = "test"
    health = env.start("attacker/test_a")
    verdict = env.end(health, tmp_path / "a" / "dmesg.txt", group_ends=False)
    assert guest.ran.count(KMEMLEAK_SCAN) == 1
    assert verdict.problem is not None and verdict.problem.startswith("kmemleak: unreferenced")


# -- between tests: teardowns and set-ups are judged too ------------------------------------


def _one_test(env: KernelHealth, name: str, tmp_path: Path):
    health = env.start(name)
    return env.end(health, tmp_path / "tests" / name.replace("/", "__") / "dmesg.txt")


def test_what_a_teardown_logs_fails_the_next_test_naming_the_window(tmp_path: Path) -> None:
    guest = FakeGuest("", 4096)
    env = _cell(tmp_path, guest)
    assert _one_test(env, "spc/test_a", tmp_path).problem is None
    guest.dmesg += "[5] WARNING: CPU: 1 PID: 80 at vhba.c:99 vhba_remove+0x10\n"  # a fixture's
    verdict = _one_test(env, "spc/test_b", tmp_path)
    assert verdict.problem is not None
    assert "after spc/test_a and before this test" in verdict.problem
    assert "vhba.c:99" in verdict.problem
    saved = tmp_path / "tests" / "spc__test_b" / "dmesg-before.txt"
    assert "vhba_remove" in saved.read_text()
    assert "vhba_remove" not in (saved.parent / "dmesg.txt").read_text(), "not in its own slice"
    assert _one_test(env, "spc/test_c", tmp_path).problem is None, "judged once"


def test_a_sanitizer_report_between_tests_is_a_finding_of_the_next_test(tmp_path: Path) -> None:
    guest = FakeGuest("", 4096)
    env = _cell(tmp_path, guest)
    _one_test(env, "attacker/test_a", tmp_path)
    report = (SAMPLES / "kasan-uaf-6.12.txt").read_text().splitlines(keepends=True)[1:]
    guest.dmesg += "".join(report)
    guest.taint = 4096 | 32
    verdict = _one_test(env, "attacker/test_b", tmp_path)
    (saved,) = verdict.findings
    assert saved.finding.kind is Kind.KASAN
    assert verdict.problem is not None
    assert verdict.problem.startswith("BUG: KASAN: slab-use-after-free in vhba_ctl_read")
    assert "1 of the reports logged after attacker/test_a" in verdict.problem
    assert "tainted after attacker/test_a and before this test" in verdict.problem
    assert verdict.problem.endswith("(new bits 0x20)")
    assert env.attributed_taint == 32


def test_the_first_test_judges_what_the_kernel_logged_from_the_module_load_on(
    tmp_path: Path,
) -> None:
    guest = FakeGuest("[1] WARNING: boot noise before the module\n", 4096)
    env = _cell(tmp_path, guest)
    env.watch_from("module load")
    guest.dmesg += "[3] BUG: unable to handle page fault for address: 0000000000000008\n"
    verdict = _one_test(env, "build/test_module_loads", tmp_path)
    assert verdict.problem is not None and "after module load" in verdict.problem
    assert "boot noise" not in verdict.problem


def test_a_wrapped_log_between_tests_is_not_a_clean_window(tmp_path: Path) -> None:
    guest = FakeGuest("", 4096)
    env = _cell(tmp_path, guest)
    _one_test(env, "spc/test_a", tmp_path)
    guest.dmesg = "[7] lines that pushed the markers out\n"
    verdict = _one_test(env, "spc/test_b", tmp_path)
    assert verdict.problem is not None and "the marker after spc/test_a is gone" in verdict.problem
