"""Known failures: expected FAILs that should not turn the matrix red, with expiry.

Modelled on LKFT's known-issues list and kdevops's per-kernel expunge files,
with one addition: every entry expires.  A matching, unexpired entry turns a
FAIL into KNOWN; once the date has passed, the same match is a FAIL again with
a message asking someone to re-check the bug or extend the entry, so the list
cannot silently grow stale.  ERROR results are never masked: they say the
harness broke, which no entry can excuse.  A SANITIZER result (the kernel
proved a memory or locking bug) is masked only by an entry that names the
report (``finding``, a glob on its first line) when every report of the test
matches it and none faults in the module itself (a title ending ``[vhba]``):
that is how a bug of the kernel's own, reached through the module, is told
apart from the module's (e.g. sr's use-after-free after a hot unplug,
``docs/kernel-bugs.md``).  The report stays attached and linked.

The file format is documented in ``conformance/known-failures.toml``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, replace
from datetime import date, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeVar, Union

from lab.errors import LabError, UsageError
from lab.paths import repo_root
from lab.report.results import Cell, Run, Status, TestResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on old interpreters
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

REQUIRED = ("kernel", "test", "reason", "issue", "expires")
OPTIONAL = ("module", "responder", "message", "finding")

Target = TypeVar("Target", bound=Union[Run, Cell])

#: How a sanitizer report's first line ends when the faulting function is in vhba.ko.
MODULE_FRAME = "[vhba]"


def default_path() -> Path:
    return repo_root() / "conformance" / "known-failures.toml"


def _module_names(cell: Cell) -> tuple[str, ...]:
    """The cell's module, and the module a --module tree shares known failures with."""
    known_as = cell.module_provenance.get("known_as")
    return (cell.module, known_as) if known_as else (cell.module,)


@dataclass(frozen=True)
class KnownFailure:
    """One ``[[known]]`` entry; patterns are shell-style (fnmatch, case-sensitive)."""

    kernel: str  # matched against the cell's kernel series *or* abi
    test: str  # matched against the test name, e.g. "media/test_tray_*"
    reason: str
    issue: str
    expires: date  # last day the entry applies
    module: str = "*"
    responder: str = "*"
    message: str = "*"  # glob on the failure message: masks only this symptom, not the test
    finding: str = ""  # glob on a sanitizer report's first line; "" masks no SANITIZER result
    source: str = ""  # "path:line", so reports can point back at the entry

    def applies_to(self, cell: Cell, test: TestResult) -> bool:
        """Same kernel, stack and test name, whatever the outcome."""
        kernel_ok = any(
            fnmatchcase(cell.kernel.get(key, ""), self.kernel) for key in ("series", "abi")
        )
        return (
            kernel_ok
            and fnmatchcase(test.name, self.test)
            and any(fnmatchcase(name, self.module) for name in _module_names(cell))
            and fnmatchcase(cell.responder, self.responder)
        )

    def matches(self, cell: Cell, test: TestResult) -> bool:
        """A FAIL with this message, or a SANITIZER result whose every report is ``finding``."""
        if not self.applies_to(cell, test):
            return False
        if test.status is Status.SANITIZER:
            return bool(self.finding and test.findings) and all(
                fnmatchcase(f.title, self.finding) and not f.title.endswith(MODULE_FRAME)
                for f in test.findings
            )
        return not self.finding and fnmatchcase(test.message or "", self.message)

    def expired(self, today: date) -> bool:
        return today > self.expires

    def to_dict(self, today: date) -> dict[str, Any]:
        """The form attached to a TestResult (see ``$defs/known_failure`` in the schema)."""
        data: dict[str, Any] = {
            "kernel": self.kernel,
            "test": self.test,
            "reason": self.reason,
            "issue": self.issue,
            "expires": self.expires.isoformat(),
            "expired": self.expired(today),
        }
        if self.module != "*":
            data["module"] = self.module
        if self.responder != "*":
            data["responder"] = self.responder
        if self.message != "*":
            data["message"] = self.message
        if self.finding:
            data["finding"] = self.finding
        if self.source:
            data["source"] = self.source
        return data


def load(path: Path | None = None) -> list[KnownFailure]:
    """Read and check a known-failures file (default: conformance/known-failures.toml)."""
    path = path or default_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read known-failures file {path}: {exc}") from exc
    return parse(text, str(path))


def parse(text: str, source: str = "known-failures.toml") -> list[KnownFailure]:
    """Parse the TOML text; any bad entry raises UsageError naming its line."""
    if tomllib is None:
        raise LabError("reading TOML needs Python >= 3.11 (or the tomli package on 3.9/3.10)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not valid TOML: {exc}") from exc
    extra = sorted(set(data) - {"known"})
    if extra:
        raise UsageError(
            f"{source}: unexpected top-level key(s) {', '.join(extra)}; "
            "every entry must be a [[known]] table"
        )
    entries = data.get("known", [])
    if not isinstance(entries, list):
        raise UsageError(f"{source}: 'known' must be written as [[known]] tables")
    lines = _LineFinder(text)
    return [_entry(raw, i, lines, source) for i, raw in enumerate(entries)]


def _entry(raw: Any, index: int, lines: _LineFinder, source: str) -> KnownFailure:
    where = f"{source}:{lines.entry(index)}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: entry {index + 1} is not a table; write it as [[known]]")

    def bad(key: str, why: str) -> UsageError:
        return UsageError(f"{source}:{lines.field(index, key)}: [[known]] entry {index + 1}: {why}")

    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        allowed = ", ".join((*REQUIRED, *OPTIONAL))
        raise bad(unknown[0], f"unknown field {unknown[0]!r}; allowed fields are {allowed}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise UsageError(
            f"{where}: [[known]] entry {index + 1} lacks {', '.join(missing)}; "
            f"every entry needs {', '.join(REQUIRED)}"
        )
    for key in (*REQUIRED, *OPTIONAL):
        if key == "expires" or key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise bad(key, f"{key!r} must be a non-empty string, got {value!r}")
    expires = raw["expires"]
    if isinstance(expires, datetime) or not isinstance(expires, date):
        raise bad(
            "expires",
            f"'expires' must be an unquoted TOML date such as 2027-01-31, got {expires!r}",
        )
    return KnownFailure(
        kernel=raw["kernel"],
        test=raw["test"],
        reason=raw["reason"],
        issue=raw["issue"],
        expires=expires,
        module=raw.get("module", "*"),
        responder=raw.get("responder", "*"),
        message=raw.get("message", "*"),
        finding=raw.get("finding", ""),
        source=where,
    )


class _LineFinder:
    """Maps entry indexes and fields back to line numbers for error messages.

    tomllib does not report positions, so this scans for ``[[known]]``
    headers; an entry written another way falls back to line 1.
    """

    _HEADER = re.compile(r"^\s*\[\[\s*known\s*\]\]")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers = [i for i, line in enumerate(self.lines) if self._HEADER.match(line)]

    def entry(self, index: int) -> int:
        return self.headers[index] + 1 if index < len(self.headers) else 1

    def field(self, index: int, key: str) -> int:
        if index >= len(self.headers):
            return 1
        start = self.headers[index]
        end = self.headers[index + 1] if index + 1 < len(self.headers) else len(self.lines)
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i in range(start, end):
            if pattern.match(self.lines[i]):
                return i + 1
        return start + 1


def apply(target: Target, entries: list[KnownFailure], today: date) -> Target:
    """Return a copy of the run or cell with known failures applied (input untouched).

    For each FAIL test (or SANITIZER test, for entries naming its reports),
    the first unexpired matching entry turns it into KNOWN with the entry
    attached; a sanitizer's reports stay attached to it.  If only expired entries match, the test
    stays FAIL, gets the expired entry attached, and its message says the
    entry expired.
    """
    if isinstance(target, Run):
        return replace(target, cells=[_apply_cell(c, entries, today) for c in target.cells])
    if isinstance(target, Cell):
        return _apply_cell(target, entries, today)
    raise TypeError(f"apply() takes a Run or a Cell, not {type(target).__name__}")


def _apply_cell(cell: Cell, entries: list[KnownFailure], today: date) -> Cell:
    return replace(cell, tests=[_apply_test(cell, t, entries, today) for t in cell.tests])


def _apply_test(
    cell: Cell, test: TestResult, entries: list[KnownFailure], today: date
) -> TestResult:
    if test.status not in (Status.FAIL, Status.SANITIZER):
        return test
    matching = [e for e in entries if e.matches(cell, test)]
    live = [e for e in matching if not e.expired(today)]
    if live:
        return replace(test, status=Status.KNOWN, known_failure=live[0].to_dict(today))
    if matching:
        entry = matching[0]
        note = (
            f"known-failure entry expired on {entry.expires.isoformat()}: re-check or extend "
            f"({entry.source}; issue: {entry.issue})"
        )
        message = f"{note}\n{test.message}" if test.message else note
        return replace(test, message=message, known_failure=entry.to_dict(today))
    return test


def now_passing(run: Run, entries: list[KnownFailure]) -> list[KnownFailure]:
    """Entries whose tests ran in ``run`` and passed wherever they apply.

    The bug is probably fixed and the entry should go.  Entries whose tests
    did not run (another kernel, ``-k``) are not reported, so a partial run
    says nothing about them.
    """
    passed, failed = set(), set()
    for cell in run.cells:
        for test in cell.tests:
            for i, entry in enumerate(entries):
                if not entry.applies_to(cell, test):
                    continue
                if test.status is Status.PASS:
                    passed.add(i)
                elif test.status in (Status.SANITIZER, Status.FAIL, Status.KNOWN):
                    failed.add(i)
    return [e for i, e in enumerate(entries) if i in passed and i not in failed]
