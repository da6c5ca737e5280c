"""summary.md: the short text a person reads first (CI job summary, PR comment).

It answers, in order: did it pass (exit code and why), how much ran, which
cells are red, what exactly failed and how to reproduce it, and what got
worse since the previous run.  A kernel sanitizer finding is named by its
kind (KASAN, LOCKDEP, ...) wherever its status appears, and linked to its
report text, because "SANITIZER" alone would not say which bug to look for.
Tests that recorded measurements (a latency, a seed) get one line each,
capped at :data:`MAX_MEASURED_TESTS` so a summary stays a summary; the rest
are in results.json and index.html.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import quote

from lab.report.results import (
    BAD,
    Cell,
    Run,
    Status,
    TestResult,
    Transition,
    fixes,
    format_measurement,
    regressions,
)

#: Lines of the "Measurements" section before it says how many more there are.
MAX_MEASURED_TESTS = 20


def _cell_md(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def render(run: Run, previous: Run | None = None) -> str:
    code, reason = run.verdict()
    counts = run.counts()
    out = [f"# vhba-lab run {run.run_id}", ""]
    out.append(f"**Result: {run.status.label}** (exit code {code}: {reason})")
    out.append("")
    hosts = [m["host"].get("hostname", "?") for m in run.merged_from] or [
        run.host.get("hostname", "?")
    ]
    accels = sorted({c.accel for c in run.cells})
    out.append(f"- started {run.started.isoformat()}, finished {run.finished.isoformat()}")
    out.append(f"- host(s): {', '.join(hosts)}; accel: {', '.join(accels) or 'n/a'}")
    out.append(
        f"- QEMU {run.host.get('qemu_version', '?')}, Python {run.host.get('python', '?')}, "
        f"lab commit {run.host.get('lab_commit', '?')}"
    )
    total = sum(counts.values())
    out.append(
        f"- {len(run.cells)} cells, {total} test results: "
        # SANITIZER only when there is one: ordinary kernels have no sanitizers to report.
        + ", ".join(f"{counts[s]} {s.value}" for s in Status if counts[s] or s in _ALWAYS)
    )
    out.append("")

    out += ["## Cells", "", "| cell | kernel | module | responder | accel | status | tests |"]
    out.append("|---|---|---|---|---|---|---|")
    for cell in run.sorted_cells():
        per = {s: 0 for s in Status}
        for t in cell.tests:
            per[t.status] += 1
        tally = ", ".join(f"{n} {s.value}" for s, n in per.items() if n) or "none"
        kernel = f"{cell.kernel.get('series', '?')} ({cell.kernel.get('abi', '?')})"
        out.append(
            f"| {cell.cell_id} | {_cell_md(kernel)} | {cell.module} | {cell.responder} "
            f"| {cell.accel} | {_status(cell)} | {tally} |"
        )
    out.append("")

    bad = [c for c in run.sorted_cells() if c.overall in (*BAD, Status.ERROR)]
    if bad:
        out += ["## Failures and harness errors", ""]
        for cell in bad:
            kind = _KIND_OF_TROUBLE[cell.overall]
            out.append(f"### {cell.cell_id}: {_status(cell)} ({kind})")
            out.append("")
            if cell.status is not Status.PASS:
                out.append(f"- cell {cell.status.value}: {_one_line(cell.message)}")
            for test in cell.tests:
                if test.status is Status.SANITIZER:
                    out += _sanitizer_lines(test)
                elif test.status in (Status.FAIL, Status.ERROR):
                    out.append(f"- `{test.name}` {test.status.label}: {_one_line(test.message)}")
            out += ["", "Reproduce:", "", "```sh", cell.reproducer or "# (no reproducer)", "```"]
            out.append("")

    known = [(c, t) for c in run.sorted_cells() for t in c.tests if t.status is Status.KNOWN]
    if known:
        out += ["## Known failures", ""]
        for cell, test in known:
            entry = test.known_failure or {}
            out.append(
                f"- {cell.cell_id} `{test.name}`: {entry.get('reason', '?')} "
                f"({entry.get('issue', '?')}, expires {entry.get('expires', '?')})"
            )
        out.append("")

    retried = [(c, line) for c in run.sorted_cells() for line in c.boot_retries]
    if retried:
        out += ["## Boots retried (infrastructure, not a verdict)", ""]
        out += [f"- {cell.cell_id}: {_one_line(line)}" for cell, line in retried]
        out.append("")

    out += _measurement_lines(run)

    if previous is not None:
        out += [f"## Compared with run {previous.run_id}", ""]
        out += _transitions("Regressions (PASS -> FAIL)", regressions(previous, run))
        out += _transitions("Fixed (FAIL -> PASS)", fixes(previous, run))
    return "\n".join(out).rstrip() + "\n"


_ALWAYS = tuple(s for s in Status if s is not Status.SANITIZER)

_KIND_OF_TROUBLE = {
    Status.SANITIZER: "kernel sanitizer finding",
    Status.FAIL: "failure",
    Status.ERROR: "harness error",
}


def _status(cell: Cell) -> str:
    """The cell's overall label, with the sanitizer kinds when that is what it is."""
    status = cell.overall
    if status is not Status.SANITIZER:
        return status.label
    kinds = dict.fromkeys(k.label for t in cell.tests for k in t.kinds)
    return f"{status.label} ({', '.join(kinds)})" if kinds else status.label


def _sanitizer_lines(test: TestResult) -> list[str]:
    kinds = ", ".join(k.label for k in test.kinds) or "sanitizer"
    lines = [f"- `{test.name}` {test.status.label} ({kinds}): {_one_line(test.message)}"]
    for finding in test.findings:
        name = PurePosixPath(finding.artifact).name
        link = f"[{name}]({quote(finding.artifact, safe='/')})"
        lines.append(f"  - {finding.label}: {_code(finding.headline)} ({link})")
    return lines


def _measurement_lines(run: Run) -> list[str]:
    """A "Measurements" section: one line per test that recorded any, whatever its status."""
    measured = [(c, t) for c in run.sorted_cells() for t in c.tests if t.measurements]
    if not measured:
        return []
    lines = ["## Measurements", ""]
    for cell, test in measured[:MAX_MEASURED_TESTS]:
        values = ", ".join(_code(format_measurement(k, v)) for k, v in test.measurements.items())
        lines.append(f"- {cell.cell_id} `{test.name}` {test.status.label}: {values}")
    if len(measured) > MAX_MEASURED_TESTS:
        lines.append(f"- ... and {len(measured) - MAX_MEASURED_TESTS} more tests: see results.json")
    return [*lines, ""]


def _code(text: str) -> str:
    """Kernel text as a Markdown code span: ``[vhba]`` or ``*`` never become markup."""
    return "`" + text.replace("`", "'") + "`"


def _transitions(title: str, items: list[Transition]) -> list[str]:
    lines = [f"**{title}: {len(items)}**", ""]
    lines += [
        f"- {t.cell_id} `{t.test}`" + (f" ({t.after.label})" if t.after is Status.SANITIZER else "")
        for t in items
    ]
    return [*lines, ""] if items else lines


def _one_line(message: str | None) -> str:
    if not message:
        return "(no message)"
    first = message.strip().splitlines()[0] if message.strip() else ""
    return first or "(no message)"


def write_summary(run: Run, path: Path, previous: Run | None = None) -> Path:
    path.write_text(render(run, previous), encoding="utf-8")
    return path
