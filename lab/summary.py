"""summary.md: the short text a person reads first (CI job summary, PR comment).

It answers, in order: did it pass (exit code and why), how much ran, which
cells are red, what exactly failed and how to reproduce it, and what got
worse since the previous run.
"""

from __future__ import annotations

from pathlib import Path

from lab.results import Run, Status, Transition, fixes, regressions


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
        + ", ".join(f"{counts[s]} {s.value}" for s in Status)
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
            f"| {cell.accel} | {cell.overall.label} | {tally} |"
        )
    out.append("")

    bad = [c for c in run.sorted_cells() if c.overall in (Status.FAIL, Status.ERROR)]
    if bad:
        out += ["## Failures and harness errors", ""]
        for cell in bad:
            kind = "harness error" if cell.overall is Status.ERROR else "failure"
            out.append(f"### {cell.cell_id}: {cell.overall.label} ({kind})")
            out.append("")
            if cell.status is not Status.PASS:
                out.append(f"- cell {cell.status.value}: {_one_line(cell.message)}")
            for test in cell.tests:
                if test.status in (Status.FAIL, Status.ERROR):
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

    if previous is not None:
        out += [f"## Compared with run {previous.run_id}", ""]
        out += _transitions("Regressions (PASS -> FAIL)", regressions(previous, run))
        out += _transitions("Fixed (FAIL -> PASS)", fixes(previous, run))
    return "\n".join(out).rstrip() + "\n"


def _transitions(title: str, items: list[Transition]) -> list[str]:
    lines = [f"**{title}: {len(items)}**", ""]
    lines += [f"- {t.cell_id} `{t.test}`" for t in items]
    return [*lines, ""] if items else lines


def _one_line(message: str | None) -> str:
    if not message:
        return "(no message)"
    first = message.strip().splitlines()[0] if message.strip() else ""
    return first or "(no message)"


def write_summary(run: Run, path: Path, previous: Run | None = None) -> Path:
    path.write_text(render(run, previous), encoding="utf-8")
    return path
