"""Kernel sanitizer reports: recognising them in a kmsg slice and in kmemleak's read-back.

Debug kernels (KASAN, KFENCE, UBSAN, lockdep, DEBUG_ATOMIC_SLEEP, kmemleak,
the hung-task, soft-lockup and workqueue watchdogs, DEBUG_OBJECTS) prove a
memory or locking bug and print a multi-line report for it.  The per-test
health check used to see only "a BUG/WARNING line"; this module turns such a
report into a :class:`Finding` with its kind, a one-line title and the whole
report text, so the result can name the bug ("KASAN") and link the report
instead of saying "kernel health: ...".

It is pure text processing (no guest, no files) so every report shape can be
unit-tested with samples.  Input is what ``dmesg`` prints (util-linux, the
same text :meth:`lab.cell.health.KernelHealth.end` slices): one printk record
per line as ``[   12.345678] text``, optionally with a caller id
(``[   12.345678][  T412] text``, CONFIG_PRINTK_CALLER), continuation lines
of multi-line records without a prefix.

Where a report ends is kind-specific, because the kernel prints no common
terminator: KASAN/KFENCE close with a ``=====`` rule, UBSAN with a rule or
``---[ end trace``, DEBUG_OBJECTS is a WARN (``---[ end trace``), and the
others end with their (last) call trace.  A report also ends where the next
one starts, and after :data:`MAX_REPORT_LINES` lines, so a report cut off at
the end of the slice still becomes a finding.

kmemleak is the exception: its reports are not in kmsg (kmsg only says
``kmemleak: N new suspected memory leaks``), they are read back from
``/sys/kernel/debug/kmemleak`` after a scan; :func:`parse_kmemleak` reads that
text.  Lines kmemleak prints to kmsg in verbose mode are deliberately *not*
findings here, so a leak is never counted twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    """What found the bug; the value is what results.json stores."""

    KASAN = "kasan"
    KFENCE = "kfence"
    UBSAN = "ubsan"
    LOCKDEP = "lockdep"
    ATOMIC_SLEEP = "atomic_sleep"
    KMEMLEAK = "kmemleak"
    HUNG_TASK = "hung_task"
    SOFT_LOCKUP = "soft_lockup"
    WQ_LOCKUP = "wq_lockup"
    ODEBUG = "odebug"

    @property
    def label(self) -> str:
        """Short upper-case name for badges and junit ``type``: what a kernel person says."""
        return _LABELS[self]


_LABELS = {
    Kind.KASAN: "KASAN",
    Kind.KFENCE: "KFENCE",
    Kind.UBSAN: "UBSAN",
    Kind.LOCKDEP: "LOCKDEP",
    Kind.ATOMIC_SLEEP: "ATOMIC SLEEP",
    Kind.KMEMLEAK: "KMEMLEAK",
    Kind.HUNG_TASK: "HUNG TASK",
    Kind.SOFT_LOCKUP: "SOFT LOCKUP",
    Kind.WQ_LOCKUP: "WQ LOCKUP",
    Kind.ODEBUG: "ODEBUG",
}

#: A report longer than this is cut: a runaway report must not swallow the slice.
MAX_REPORT_LINES = 400


@dataclass(frozen=True)
class Finding:
    """One sanitizer report.

    ``title`` is the report's first line without the printk prefix (the line
    people search for); ``text`` is the whole report as the kernel printed it,
    timestamps included; ``lines`` are its line numbers in the scanned text,
    so the caller can tell which generic BUG/WARNING lines it already explains.
    """

    kind: Kind
    title: str
    text: str
    lines: range = range(0)

    @property
    def headline(self) -> str:
        return headline(self.kind, self.title)


def headline(kind: Kind, title: str) -> str:
    """A finding's one-line summary: its title, named when the title does not say what
    found it (only kmemleak's, "unreferenced object ...", does not)."""
    return f"kmemleak: {title}" if kind is Kind.KMEMLEAK else title


# -- recognising the first line ---------------------------------------------------

# dmesg's "[   12.345678] " and CONFIG_PRINTK_CALLER's "[  T412] " / "[    C0] ".
_PREFIX = re.compile(r"^\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])? ?")

_LOCKDEP = (
    r"possible circular locking dependency detected",
    r"possible recursive locking detected",
    r"inconsistent lock state",
    r"possible irq lock inversion dependency detected",
    r"\S+-safe -> \S+-unsafe lock order detected",
    r"bad unlock balance detected!",
    r"held lock freed!",
    r"lock held when returning to user space!",
    r"suspicious RCU usage",
)

#: First-line patterns, tried in order on the line without its printk prefix.
_STARTS: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    (Kind.KASAN, re.compile(r"^BUG: KASAN: .+ in ")),
    (Kind.KFENCE, re.compile(r"^BUG: KFENCE: .+ in ")),
    (Kind.UBSAN, re.compile(r"^UBSAN: .+ in ")),  # 4.x: "UBSAN: Undefined behaviour in"
    (Kind.LOCKDEP, re.compile(rf"^(?:WARNING|INFO): (?:{'|'.join(_LOCKDEP)})")),
    (Kind.LOCKDEP, re.compile(r"^BUG: Invalid wait context")),
    (Kind.ATOMIC_SLEEP, re.compile(r"^BUG: sleeping function called from invalid context")),
    (Kind.ATOMIC_SLEEP, re.compile(r"^BUG: scheduling while atomic")),
    (Kind.HUNG_TASK, re.compile(r"^INFO: task .+:\d+ blocked for more than \d+ seconds")),
    (Kind.SOFT_LOCKUP, re.compile(r"^(?:watchdog: )?BUG: soft lockup - CPU#\d+ stuck for")),
    (Kind.WQ_LOCKUP, re.compile(r"^BUG: workqueue lockup - pool")),
    # Only the object reports, not "ODEBUG: selftest passed" or its boot statistics.
    (Kind.ODEBUG, re.compile(r"^ODEBUG: .*(?:object type: |on stack )")),
)

_RULE = re.compile(r"^={20,}\s*$")
_CUT_HERE = re.compile(r"^-+\[ cut here \]-+\s*$")
_END_TRACE = re.compile(r"^-+\[ end trace")
# The register dump (x86-64) that 5.x prints inside a call trace without indenting it.
_REGS = r"(?:RIP|Code|RSP|RAX|RDX|RBP|R10|R13|FS|CS|CR2|DR0|DR3|DR6|PKRU):\s"
_REGISTERS = re.compile(rf"^{_REGS}")
# What follows "BUG: workqueue lockup": the busy workqueue and pool dump.
_WQ_DUMP = re.compile(
    rf"^(?:Showing |workqueue |pool \d+:|task:|Call Trace:|CPU: |Hardware name:|{_REGS})"
)


def _clean(line: str) -> str:
    """The line without its printk timestamp and caller id (indentation kept)."""
    return _PREFIX.sub("", line, count=1)


def _start(line: str) -> Kind | None:
    for kind, pattern in _STARTS:
        if pattern.match(line):
            return kind
    return None


def _indented(line: str) -> bool:
    return line[:1] in (" ", "\t")


# -- finding where a report ends ---------------------------------------------------

#: Called on each line after the title: the index just past the report's last
#: line once the end is seen, else None.
_Ender = Callable[[list[str], int], "int | None"]


def _at_rule(lines: list[str], j: int) -> int | None:
    return j + 1 if _RULE.match(lines[j]) else None


def _at_rule_or_end_trace(lines: list[str], j: int) -> int | None:
    return j + 1 if _RULE.match(lines[j]) or _END_TRACE.match(lines[j]) else None


def _at_end_trace(lines: list[str], j: int) -> int | None:
    return j + 1 if _END_TRACE.match(lines[j]) else None


def _after_wq_dump(lines: list[str], j: int) -> int | None:
    line = lines[j]
    if not line.strip() or not (_indented(line) or _WQ_DUMP.match(line)):
        return j
    return None


class _TraceEnd:
    """Ends a report with its call trace (the first one after the ``arm`` line, if given).

    Since 5.16 x86 brackets a trace with ``<TASK>`` / ``</TASK>`` (user-mode
    registers appear unindented inside it, an ``<IRQ>`` part may come first);
    older kernels only indent the frames, so there the first plain line after
    the frames (register dumps aside) ends the trace.  lockdep prints
    dependency chains with indented frames before its ``stack backtrace:``,
    hence ``arm``.  Stateful: one instance per report.
    """

    def __init__(self, arm: str | None = None) -> None:
        self.arm = arm
        self.armed = arm is None
        self.in_trace = False
        self.in_task = False
        self.frames = 0

    def __call__(self, lines: list[str], j: int) -> int | None:
        line = lines[j]
        text = line.strip()
        if not self.armed:
            self.armed = text == self.arm
            return None
        if not self.in_trace:
            self.in_trace = text == "Call Trace:"
            return None
        if text == "<TASK>":
            self.in_task = True
        if self.in_task:
            return j + 1 if text == "</TASK>" else None
        if _indented(line):
            self.frames += 1
            return None
        if self.frames and _REGISTERS.match(line):
            return None
        return j if self.frames else None


#: How each kind's report ends; a factory, since some enders keep state.
_ENDS: dict[Kind, Callable[[], _Ender]] = {
    Kind.KASAN: lambda: _at_rule,
    Kind.KFENCE: lambda: _at_rule,
    Kind.UBSAN: lambda: _at_rule_or_end_trace,
    Kind.ODEBUG: lambda: _at_end_trace,
    Kind.WQ_LOCKUP: lambda: _after_wq_dump,
    Kind.LOCKDEP: lambda: _TraceEnd("stack backtrace:"),
    Kind.ATOMIC_SLEEP: _TraceEnd,
    Kind.HUNG_TASK: _TraceEnd,
    Kind.SOFT_LOCKUP: _TraceEnd,
}


def _header(line: str) -> bool:
    """A line the kernel prints just before a report's title, and that belongs to it."""
    return bool(_RULE.match(line) or _CUT_HERE.match(line))


def _report_end(kind: Kind, lines: list[str], start: int) -> int:
    end = _ENDS[kind]()
    limit = min(len(lines), start + MAX_REPORT_LINES)
    for j in range(start + 1, limit):
        if _start(lines[j]) is not None:
            # The next report's header rule is the next report's, not this one's.
            return j - 1 if _header(lines[j - 1]) and j - 1 > start else j
        found = end(lines, j)
        if found is not None:
            return found
    return limit


# -- public ---------------------------------------------------------------------


def scan_kmsg(text: str) -> list[Finding]:
    """Every sanitizer report in a kmsg slice, in log order (kmemleak excepted: see above)."""
    raw = text.splitlines()
    lines = [_clean(line) for line in raw]
    findings: list[Finding] = []
    i, taken = 0, 0
    while i < len(lines):
        kind = _start(lines[i])
        if kind is None:
            i += 1
            continue
        begin = i - 1 if i > taken and _header(lines[i - 1]) else i
        end = _report_end(kind, lines, i)
        findings.append(
            Finding(kind, lines[i].strip(), "\n".join(raw[begin:end]) + "\n", range(begin, end))
        )
        i = taken = end
    return findings


_LEAK = re.compile(r"^unreferenced object 0x[0-9a-f]+ \(size \d+\):?")


def parse_kmemleak(text: str) -> list[Finding]:
    """One finding per ``unreferenced object`` block of /sys/kernel/debug/kmemleak's text.

    A block runs until the next object (the read-back has nothing else in
    it); the title drops the trailing colon.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _LEAK.match(line.strip())]
    findings = []
    for n, begin in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        while end > begin + 1 and not lines[end - 1].strip():
            end -= 1
        title = lines[begin].strip().removesuffix(":")
        findings.append(
            Finding(Kind.KMEMLEAK, title, "\n".join(lines[begin:end]) + "\n", range(begin, end))
        )
    return findings
