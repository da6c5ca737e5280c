"""Kernel health around each test: kmsg markers, the taint value, sanitizer reports.

Before a test the harness writes a start marker to /dev/kmsg and reads the
taint value; after it, it reads the kernel log and the taint value again, and
writes an end marker, in one guest round trip each (they run around every
test, so they are kept cheap: only the end reads the log).  The log is read
from the last check's end marker on, so what the kernel logged between one
test's end and the next one's start (the first test's teardown, the second's
set-up: drive restarts, disc changes, module reloads; for a cell's first
test, everything from the module load on) comes with the test's own slice and
is judged with that test: a bug hit in a fixture is nobody's verdict
otherwise.  Sanitizer reports of debug kernels are recognised
first (:mod:`lab.cell.sanitizers`) and saved one file each, so the test can be
recorded as SANITIZER with the bug named; generic BUG/WARNING lines and new
taint bits fail the test as before.  A kernel with kmemleak (debug kernels
only; the first check of a cell asks) also pays for kmemleak's scans: after
each group's last test by default, or after every test
(``--kmemleak-scans test``), which names the test that leaked but costs about
50 s a test on a sanitizer kernel under TCG: hours for a full debug cell.  A
leak a group scan finds is the finding of the test whose check ran the scan,
and the verdict names every test the scan covers.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.cell.sanitizers import Finding, parse_kmemleak, scan_kmsg
from lab.errors import GuestLostError, LabError
from lab.vm.guest import command_text

# Kernel log lines that mean the kernel is unhealthy (the blktests list).
BAD_KMSG = re.compile(
    r"kernel BUG at|WARNING:|BUG:|Oops:|possible recursive locking detected|Internal error|"
    r"INFO: suspicious RCU usage|INFO: possible circular locking dependency detected|"
    r"general protection fault:|GET_EVENT and TUR disagree"
)
# The taint value with shell builtins only: no process to start around every test.
READ_TAINT = "read -r taint < /proc/sys/kernel/tainted && echo $taint"
# Taint bits an out-of-tree, unsigned module sets by design (O = 4096, E = 8192).
EXPECTED_TAINT = 4096 | 8192
#: Per test; more reports than this (a leak per I/O) are counted, not each saved.
MAX_SAVED_FINDINGS = 20
KMEMLEAK = "/sys/kernel/debug/kmemleak"
# kmemleak reports an object only once it is older than its minimum age
# (MSECS_MIN_AGE, 5 s) and unchanged over two scans: scan, wait, scan, so a
# leak shows up in the test that made it rather than in a later one.  The wait
# is what the first scan left of the minimum age (one more second for bash's
# whole-second $SECONDS): a sanitizer kernel under TCG scans for ~25 s, so it
# waits for nothing there, and a fast kernel still waits the full age.
KMEMLEAK_MIN_AGE_S = 5
_KMEMLEAK_TWO_SCANS = (
    f"SECONDS=0; echo scan > $f && {{ [ $SECONDS -gt {KMEMLEAK_MIN_AGE_S} ] || "
    f"sleep $(({KMEMLEAK_MIN_AGE_S} + 1 - SECONDS)); }} && echo scan > $f"
)
# Runs once per cell.  Debian mounts debugfs itself; a kernel built with kmemleak
# (kmemleak_alloc is in kallsyms) gets it mounted if not.  The periodic scan
# thread is stopped so the harness's scans are the only ones (each leak lands in
# exactly one test), and what boot and cell set-up left is read and cleared.
KMEMLEAK_PROBE = f"""f={KMEMLEAK}
if [ ! -e $f ] && ! mountpoint -q /sys/kernel/debug && grep -qw kmemleak_alloc /proc/kallsyms
then mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null; fi
[ -e $f ] || {{ echo absent; exit 0; }}
echo scan=off 2>/dev/null > $f || {{ echo disabled; exit 0; }}
echo present
{_KMEMLEAK_TWO_SCANS} && cat $f && echo clear > $f
"""
KMEMLEAK_SCAN = f"f={KMEMLEAK}; {_KMEMLEAK_TWO_SCANS} && cat $f && echo clear > $f"
# When kmemleak scans: after the last test of each group (a test module), or
# after every test.
LEAK_SCAN_SCOPES = ("group", "test")


@dataclass
class Health:
    """Kernel health around one test: a kmsg marker and the taint value before it."""

    marker: str
    taint_before: int
    test: str = ""
    # The kernel log from the last check's end marker (``since_marker``; ``since``
    # names what ended there, e.g. a test) to this test's start, read by the end
    # check; None when nothing was watched before.
    between: str | None = None
    since: str = ""
    since_marker: str | None = None
    # The taint value when the last check ended (None: no check ended yet).
    taint_at_since: int | None = None


@dataclass(frozen=True)
class SavedFinding:
    """A sanitizer finding and the file its report text was written to."""

    finding: Finding
    path: Path


@dataclass(frozen=True)
class HealthVerdict:
    """What the check after one test found.

    ``problem`` is everything wrong in one line (None: healthy), sanitizer
    findings first; the test fails with it.  ``findings`` make the test a
    SANITIZER result; ``artifacts`` are the files to link from it (label ->
    path: ``sanitizer-<n>`` per saved report, ``kmemleak`` for the read-back).
    """

    problem: str | None = None
    findings: tuple[SavedFinding, ...] = ()
    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass
class KernelHealth:
    """The checks for one cell: ``guest`` gives its channel, ``phase`` times the work."""

    guest: Callable[[], Any]
    cell_dir: Path
    phase: Callable[[str], contextlib.AbstractContextManager[None]] = lambda name: (
        contextlib.nullcontext()
    )
    # Whether the kernel has a working kmemleak; None until the first check asks.
    kmemleak: bool | None = None
    leak_scans: str = "group"  # one of LEAK_SCAN_SCOPES
    # The tests checked since kmemleak's last scan: those a leak found next may be from.
    unscanned: list[str] = field(default_factory=list)
    # Taint bits some test's verdict already named: the whole-cell taint check
    # (conformance/test_13_health.py) leaves them to that test.
    attributed_taint: int = 0
    # The marker the last check ended with, and what it ended (None: none yet).
    last_end: tuple[str, str] | None = None
    last_taint: int | None = None  # the taint value the last test's check read

    def watch_from(self, what: str) -> None:
        """Mark the log: the next test's check also judges what the kernel logs from here."""
        marker = f"vhba-lab: watch from {what} {time.time():.6f}"
        with self.phase("health_checks"):
            self.guest().sh(f"echo {command_text([marker])} > /dev/kmsg")
        self.last_end = (marker, what)

    def start(self, test_name: str) -> Health:
        if self.kmemleak is None:
            self.kmemleak = self._kmemleak_probe()
        marker = f"vhba-lab: test start {test_name} {time.time():.6f}"
        with self.phase("health_checks"):
            mark = f"{READ_TAINT}; echo {command_text([marker])} > /dev/kmsg"
            out = self.guest().sh(mark).stdout
        since_marker, since = self.last_end if self.last_end is not None else (None, "")
        return Health(
            marker, int(out.strip()), test_name, since=since, since_marker=since_marker,
            taint_at_since=self.last_taint,
        )  # fmt: skip

    def taint(self) -> int:
        return int(self.guest().run(["cat", "/proc/sys/kernel/tainted"]).stdout.strip())

    def end(self, health: Health, out: Path, group_ends: bool = True) -> HealthVerdict:
        """Save the test's dmesg slice to ``out``; say what is wrong with the kernel, if anything.

        Sanitizer reports (in the slice, and in kmemleak's read-back when the
        kernel has it) are written next to ``out`` as ``sanitizer-<n>.txt``;
        the generic BUG/WARNING check then only reports lines they do not
        already explain.  Without sanitizers the verdict is what it always was.
        ``group_ends``: no test of this test's group follows it (kmemleak scans
        then unless it scans after every test).
        """
        end_marker = health.marker.replace("vhba-lab: test start ", "vhba-lab: test end ", 1)
        wanted = (
            [health.marker] if health.since_marker is None else [health.since_marker, health.marker]
        )
        with self.phase("health_checks"):
            # grep -A: the first line with either marker and everything after it
            markers = " ".join(f"-e {command_text([m])}" for m in wanted)
            slice_cmd = f"dmesg | grep -F -A 1000000 {markers}"
            mark = f"echo {command_text([end_marker])} > /dev/kmsg"
            res = self.guest().sh(f"{READ_TAINT}; {slice_cmd}; {mark}", timeout=60, check=False)
        self.last_end = (end_marker, health.test)
        taint_line, _, dmesg = res.stdout.partition("\n")
        before, started, after = dmesg.partition(health.marker)
        if health.since_marker is not None:
            # up to the start marker's line; empty when the last end marker is gone
            window = before[: before.rfind("\n") + 1]
            opened = health.since_marker in window.partition("\n")[0]
            health.between = window if opened else ""
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(after.lstrip("\n"))
        findings, bad = _reports_and_bad_lines(after)
        problems_between: list[str] = []
        if health.between is not None:
            between_findings, problems_between, taint_between = _judge_between(health, out.parent)
            findings = between_findings + findings
            self.attributed_taint |= taint_between
        artifacts: dict[str, Path] = {}
        leak_scope = None
        if self.kmemleak:
            self.unscanned.append(health.test)
        if self.kmemleak and (group_ends or self.leak_scans == "test"):
            leaks = self._kmemleak_scan()
            covered, self.unscanned = self.unscanned, []
            if leaks.strip():
                artifacts["kmemleak"] = out.parent / "kmemleak.txt"
                artifacts["kmemleak"].write_text(
                    f"# kmemleak's scan after {health.test}; the tests since its last scan: "
                    f"{', '.join(covered)}\n{leaks}"
                )
                findings += parse_kmemleak(leaks)
                if len(covered) > 1:
                    leak_scope = (
                        f"kmemleak's scan after this test covers the {len(covered)} tests "
                        f"since its last one ({covered[0]} .. {covered[-1]}; all in kmemleak.txt): "
                        "rerun them with --kmemleak-scans test to name the one that leaked"
                    )
        saved = []
        for n, finding in enumerate(findings[:MAX_SAVED_FINDINGS], start=1):
            path = out.parent / f"sanitizer-{n}.txt"
            path.write_text(finding.text)
            artifacts[f"sanitizer-{n}"] = path
            saved.append(SavedFinding(finding, path))
        # where a group's leaks may come from goes first: records keep 500 characters
        problems = [leak_scope] if leak_scope is not None else []
        problems += [s.finding.headline for s in saved] + problems_between
        if len(findings) > len(saved):
            problems.append(
                f"{len(findings) - len(saved)} more sanitizer reports "
                "(not saved one by one: see dmesg.txt, kmemleak.txt)"
            )
        if not started:
            problems.append(f"kernel log: the test's start marker is gone ({health.marker!r})")
        if bad:
            problems.append("kernel log: " + " | ".join(line.strip() for line in bad[:5]))
        taint_now = int(taint_line.strip()) if taint_line.strip().isdigit() else -1
        if taint_now < 0:
            problems.append(f"could not read /proc/sys/kernel/tainted: {res.stderr.strip()}")
        new_taint = (taint_now & ~health.taint_before) & ~EXPECTED_TAINT if taint_now >= 0 else 0
        if new_taint:
            problems.append(f"kernel became tainted (new bits 0x{new_taint:x})")
            self.attributed_taint |= new_taint
        if taint_now >= 0:
            self.last_taint = taint_now
        return HealthVerdict("; ".join(problems) or None, tuple(saved), artifacts)

    def _kmemleak_probe(self) -> bool:
        """Whether kmemleak works here; what boot and set-up left goes to the cell dir."""
        with self.phase("kmemleak_scans"):
            try:
                res = self.guest().sh(KMEMLEAK_PROBE, timeout=600, check=False)
            except GuestLostError:
                raise
            except LabError as exc:
                self._kmemleak_note(f"probing kmemleak failed: {exc}")
                return False
        state, _, baseline = res.stdout.partition("\n")
        if state.strip() != "present":
            return False
        if baseline.strip():
            (self.cell_dir / "kmemleak-baseline.txt").write_text(baseline)
        return True

    def _kmemleak_scan(self) -> str:
        """kmemleak's read-back after a scan: the leaks since the last one ("" if none)."""
        with self.phase("kmemleak_scans"):
            try:
                res = self.guest().sh(KMEMLEAK_SCAN, timeout=600, check=False)
            except GuestLostError:
                raise
            except LabError as exc:
                res = None
                why = str(exc)
            else:
                why = f"rc {res.rc}: {res.stderr.strip()}"
        if res is None or res.rc != 0:
            # kmemleak turns itself off on internal errors; the tests go on without it.
            self.kmemleak = False
            self._kmemleak_note(f"kmemleak scan failed ({why}); no more scans in this cell")
            return ""
        return res.stdout

    def _kmemleak_note(self, text: str) -> None:
        self.cell_dir.mkdir(parents=True, exist_ok=True)
        with (self.cell_dir / "kmemleak-notes.txt").open("a") as fh:
            fh.write(text.rstrip() + "\n")


def _judge_between(health: Health, test_dir: Path) -> tuple[list[Finding], list[str], int]:
    """What the kernel did after the last check and before ``health``'s test: its
    sanitizer reports, the problems to name (each saying where), the new taint bits.

    The window is saved as ``dmesg-before.txt`` in the test's directory; a
    window without its opening marker (the ring buffer wrapped) says so.
    """
    assert health.between is not None
    where = f"after {health.since} and before this test (its teardown or this set-up)"
    problems = []
    head, found, window = health.between.partition("\n")
    findings: list[Finding] = []
    if not found and not head.strip():
        problems.append(f"kernel log: the marker after {health.since} is gone")
    else:
        test_dir.mkdir(parents=True, exist_ok=True)
        (test_dir / "dmesg-before.txt").write_text(window)
        findings, bad = _reports_and_bad_lines(window)
        if findings:
            problems.append(f"{len(findings)} of the reports logged {where}")
        if bad:
            problems.append(f"kernel log {where}: " + " | ".join(line.strip() for line in bad[:5]))
    new = 0
    if health.taint_at_since is not None:
        new = health.taint_before & ~health.taint_at_since & ~EXPECTED_TAINT
        if new:
            problems.append(f"kernel became tainted {where} (new bits 0x{new:x})")
    return findings, problems, new


def _reports_and_bad_lines(log: str) -> tuple[list[Finding], list[str]]:
    """The sanitizer reports in ``log``, and its bad lines that no report explains."""
    findings = scan_kmsg(log)
    explained = {n for f in findings for n in f.lines}
    bad = [
        line
        for n, line in enumerate(log.splitlines())
        if n not in explained and BAD_KMSG.search(line)
    ]
    return findings, bad
