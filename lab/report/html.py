"""index.html: a self-contained, static kernels x tests matrix.

One file, inline CSS, no JavaScript and nothing fetched from elsewhere, so the
page works from a CI artifact download, a file:// URL or an archived tarball.
Every status is shown as a text label on a colour (never colour alone), and
every link points at a file that exists when the page is written: a missing
artifact is printed as "missing", never as a dead link.

All text that comes from results (test names, messages, paths) goes through
:func:`html.escape`; paths are additionally URL-quoted before they become
``href`` values.

A SANITIZER result is shown by its kind, not its status word: the badge says
"KASAN" (or "LOCKDEP", ...) and links the report text, in the test's row and
on the cell's column, because the kind is what tells a developer which bug
the kernel proved.

A test's measurements (``record_property``: a latency, a seed) are printed
under its badge as ``name = value`` lines, for a pass as much as a failure:
a number that only shows up when something breaks cannot show a drift.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path
from urllib.parse import quote

from lab.report.results import (
    BAD,
    CELL_ARTIFACTS,
    RESULTS_FILE,
    TEST_LOG,
    Cell,
    Run,
    SanitizerFinding,
    Status,
    TestResult,
    artifact_file,
    format_measurement,
    format_measurements,
    regressions,
)

INDEX_FILE = "index.html"

STATUS_HELP = {
    Status.SANITIZER: (
        "a kernel sanitizer (KASAN, UBSAN, lockdep, kmemleak, ...) reported a bug during the "
        "test; the badge names it and links the report"
    ),
    Status.FAIL: "the module (or responder) under test misbehaved",
    Status.ERROR: "the harness broke (boot timeout, panic, infrastructure): not a module verdict",
    Status.PASS: "the test passed",
    Status.KNOWN: "a failure listed in conformance/known-failures.toml (not expired)",
    Status.SKIP: "the test did not apply to this cell",
}

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --panel:#f6f8fa;
  --pass-bg:#d7f5dd; --pass-fg:#0f5323; --pass-bd:#8fd6a0;
  --san-bg:#4a1070; --san-fg:#ffffff; --san-bd:#2a0845;
  --fail-bg:#cf222e; --fail-fg:#ffffff; --fail-bd:#a40e26;
  --error-bg:#ffd8a8; --error-fg:#6b3300; --error-bd:#e8913a;
  --known-bg:#dde4ff; --known-fg:#2b3a99; --known-bd:#a5b4fc;
  --skip-bg:#eef0f2; --skip-fg:#59636e; --skip-bd:#d1d9e0; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
  color:var(--fg); background:var(--bg); }
code, .mono { font-family: ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;
  font-size:12px; }
a { color:#0b57d0; }
header.top { padding:16px 24px 12px; border-bottom:1px solid var(--line); background:var(--panel); }
header.top h1 { margin:0 0 6px; font-size:20px; font-weight:650; display:flex; gap:12px;
  align-items:center; flex-wrap:wrap; }
header.top h1 .runid { font-family: ui-monospace,"DejaVu Sans Mono",monospace; font-weight:600; }
.verdict { color:var(--muted); font-size:14px; margin:0 0 8px; }
dl.facts { display:flex; flex-wrap:wrap; gap:4px 22px; margin:0; font-size:13px; }
dl.facts div { display:flex; gap:6px; }
dl.facts dt { color:var(--muted); }
dl.facts dd { margin:0; }
.totals { display:flex; flex-wrap:wrap; gap:8px; margin-top:10px; align-items:center; }
.totals .count { font-weight:600; margin-left:3px; }
main { padding:16px 24px 32px; }
h2 { font-size:16px; margin:22px 0 8px; }
.legend { display:flex; flex-wrap:wrap; gap:6px 18px; margin:0; padding:0; list-style:none;
  font-size:12.5px; color:var(--muted); }
.legend li { display:flex; gap:6px; align-items:center; }
.badge { display:inline-block; min-width:52px; padding:2px 7px; border-radius:4px;
  border:1px solid; font-size:11.5px; font-weight:700; letter-spacing:.04em; text-align:center;
  text-decoration:none; white-space:nowrap; }
a.badge:hover, a.badge:focus { outline:2px solid #0b57d0; outline-offset:1px; }
.badge.pass { background:var(--pass-bg); color:var(--pass-fg); border-color:var(--pass-bd); }
.badge.sanitizer { background:var(--san-bg); color:var(--san-fg); border-color:var(--san-bd);
  box-shadow: inset 0 -2px 0 var(--fail-bg); }
.badge.fail { background:var(--fail-bg); color:var(--fail-fg); border-color:var(--fail-bd); }
.badge.error { color:var(--error-fg); border-color:var(--error-bd); border-style:dashed;
  background:repeating-linear-gradient(135deg,var(--error-bg) 0 6px,#ffe9cc 6px 12px); }
.badge.known { background:var(--known-bg); color:var(--known-fg); border-color:var(--known-bd); }
.badge.skip { background:var(--skip-bg); color:var(--skip-fg); border-color:var(--skip-bd); }
.new { display:inline-block; margin-left:4px; padding:0 4px; border-radius:3px; font-size:10px;
  font-weight:700; background:#fff1f0; color:#a40e26; border:1px solid #f5a3a3; }
.absent { color:#8c959f; font-size:12px; }
.matrix-wrap { overflow:auto; max-height:78vh; width:fit-content; max-width:100%;
  border:1px solid var(--line); border-radius:6px; }
table.matrix { border-collapse:separate; border-spacing:0; }
table.matrix th, table.matrix td { border-bottom:1px solid var(--line);
  border-right:1px solid var(--line); padding:5px 8px; }
table.matrix thead th { position:sticky; top:0; z-index:2; background:var(--panel);
  vertical-align:top; text-align:left; font-weight:400; width:190px; min-width:170px; }
table.matrix thead th.col-sanitizer { box-shadow: inset 0 4px 0 var(--san-bg); }
table.matrix thead th.col-fail { box-shadow: inset 0 4px 0 var(--fail-bg); }
table.matrix thead th.col-error { box-shadow: inset 0 4px 0 var(--error-bd); }
table.matrix th.corner { left:0; z-index:3; min-width:250px; vertical-align:bottom;
  color:var(--muted); font-size:12px; }
table.matrix tbody th[scope=row] { position:sticky; left:0; z-index:1; background:#fff;
  text-align:left; font-weight:500; white-space:nowrap; }
table.matrix tbody td { text-align:center; }
table.matrix tbody tr:hover td, table.matrix tbody tr:hover th[scope=row] { background:#f3f7ff; }
table.matrix tr.group th { position:sticky; left:0; background:#eaeef2; text-align:left;
  font-size:12px; text-transform:uppercase; letter-spacing:.06em; color:#424a53; }
.series { font-size:17px; font-weight:700; }
.abi { font-family: ui-monospace,"DejaVu Sans Mono",monospace; font-size:11px; color:var(--muted);
  word-break:break-all; }
.combo { font-size:12px; margin:3px 0 5px; }
.combo b { font-weight:600; }
ul.arts { list-style:none; margin:6px 0 0; padding:0; font-size:11.5px; line-height:1.5; }
ul.arts .missing { color:#8c959f; }
tfoot th, tfoot td { background:var(--panel); vertical-align:top; text-align:left; }
tfoot th { position:sticky; left:0; z-index:1; font-size:12px; color:var(--muted); }
code.repro { display:block; white-space:pre-wrap; overflow-wrap:anywhere; user-select:all;
  background:#fff; border:1px solid var(--line); border-radius:4px; padding:4px 6px;
  }
section.cell-detail { border:1px solid var(--line); border-radius:6px; padding:10px 14px;
  margin:10px 0; }
section.cell-detail h3 { margin:0 0 6px; font-size:14px; display:flex; gap:8px;
  align-items:center; }
section.cell-detail pre { background:var(--panel); padding:6px 8px; border-radius:4px;
  white-space:pre-wrap; word-break:break-word; margin:4px 0 8px; font-size:12px; }
section.cell-detail code.repro { max-width:none; }
ul.failures { margin:4px 0; padding-left:18px; }
ul.findings { margin:4px 0 8px; padding-left:18px; list-style:none; }
ul.findings li { margin:2px 0; }
ul.meas { list-style:none; margin:3px 0 0; padding:0; font-size:11px; line-height:1.35;
  color:var(--muted); text-align:left; overflow-wrap:anywhere; }
ul.meas code { font-size:11px; }
section.cell-detail ul.meas { margin:2px 0 4px; }
section.cell-detail ul.meas code { font-size:12px; }
footer { padding:12px 24px; color:var(--muted); font-size:12px; border-top:1px solid var(--line); }
""".strip()


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _href(rel: str) -> str:
    return _e(quote(rel, safe="/"))


def _provenance_title(cell: Cell) -> str:
    """The module's provenance as a tooltip (every field), or nothing."""
    info = cell.module_provenance
    if not info:
        return ""
    return f' title="{_e(chr(10).join(f"{k}: {v}" for k, v in info.items()))}"'


def _provenance_line(cell: Cell) -> str:
    """For a --module tree, where it came from in one short visible line."""
    info = cell.module_provenance
    if cell.module in ("ours", "upstream") or not info:
        return ""
    origin = info.get("git_describe") or Path(info.get("given", "")).name or "?"
    ko = info.get("ko_sha256", "")
    return f'<div class="abi provenance">{_e(origin)}{" · ko " + _e(ko[:12]) if ko else ""}</div>'


def _anchor(cell_id: str) -> str:
    return f"cell-{cell_id}"


def _badge(
    status: Status, *, href: str | None = None, title: str | None = None, text: str | None = None
) -> str:
    """A status badge; ``text`` replaces the status word (a sanitizer kind, e.g. "KASAN")."""
    attrs = f' class="badge {status.value}"'
    if title:
        attrs += f' title="{_e(title)}"'
    label = _e(text) if text else status.label
    if href:
        return f'<a{attrs} href="{_href(href)}">{label}</a>'
    return f"<span{attrs}>{label}</span>"


def _kinds_text(findings: list[SanitizerFinding]) -> str | None:
    """Badge text naming the sanitizers: "KASAN", "KASAN +1" (more kinds), None if none."""
    kinds = list(dict.fromkeys(f.label for f in findings))
    if not kinds:
        return None
    return kinds[0] + (f" +{len(kinds) - 1}" if len(kinds) > 1 else "")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


class _Page:
    """Renders one run; holds the run directory so links can be checked."""

    def __init__(self, run: Run, run_dir: Path, previous: Run | None) -> None:
        self.run = run
        self.run_dir = run_dir
        self.previous = previous
        self.cells = run.sorted_cells()
        self.new_failures = (
            {(t.cell_id, t.test) for t in regressions(previous, run)} if previous else set()
        )

    def exists(self, rel: str | None) -> bool:
        return bool(rel) and artifact_file(self.run_dir, rel or "") is not None

    def link(self, rel: str | None, text: str) -> str:
        """A link if the file exists, else the text marked missing."""
        if rel and self.exists(rel):
            return f'<a href="{_href(rel)}">{_e(text)}</a>'
        return f'<span class="missing">{_e(text)}: missing</span>'

    # -- page ----------------------------------------------------------------

    def render(self) -> str:
        run = self.run
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>vhba-lab {_e(run.run_id)}: {run.status.label}</title>",
            f"<style>\n{CSS}\n</style>",
            "</head>",
            "<body>",
            self.header(),
            "<main>",
            self.legend(),
            self.matrix(),
            self.details(),
            self.known(),
            self.retries(),
            "</main>",
            self.footer(),
            "</body>",
            "</html>",
        ]
        return "\n".join(p for p in parts if p) + "\n"

    def header(self) -> str:
        run = self.run
        code, reason = run.verdict()
        counts = run.counts()
        if run.merged_from:
            hosts = ", ".join(
                f"{m['host'].get('hostname', '?')} ({m['run_id']})" for m in run.merged_from
            )
        else:
            hosts = run.host.get("hostname", "?")
        accels = ", ".join(sorted({c.accel for c in run.cells})) or "n/a"
        facts = [
            ("started", run.started.strftime("%Y-%m-%d %H:%M:%S %Z").strip()),
            ("duration", _duration((run.finished - run.started).total_seconds())),
            ("host" if not run.merged_from else "hosts", hosts),
            ("accel", accels),
            ("QEMU", run.host.get("qemu_version", "?")),
            ("Python", run.host.get("python", "?")),
            ("lab commit", run.host.get("lab_commit", "?")),
            ("boots retried", str(sum(len(c.boot_retries) for c in run.cells))),
        ]
        facts_html = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
        chips = [f"<span>{len(run.cells)} cells, {sum(counts.values())} results:</span>"]
        for status in Status:
            if status is Status.SANITIZER and not counts[status]:
                continue  # ordinary kernels have no sanitizers: no "SANITIZER 0" chip
            chips.append(
                f'<span>{_badge(status)}<span class="count">{counts[status]}</span></span>'
            )
        return (
            '<header class="top">'
            f'<h1>vhba-lab run <span class="runid">{_e(run.run_id)}</span> '
            f"{_badge(run.status, title=reason)}</h1>"
            f'<p class="verdict">exit code {code}: {_e(reason)}</p>'
            f'<dl class="facts">{facts_html}</dl>'
            f'<div class="totals" aria-label="totals">{"".join(chips)}</div>'
            "</header>"
        )

    def legend(self) -> str:
        items = "".join(f"<li>{_badge(s)} {_e(STATUS_HELP[s])}</li>" for s in Status)
        items += (
            '<li><span class="new">new</span> passed in the previous run</li>'
            if self.previous
            else ""
        )
        items += '<li><span class="absent">—</span> not run in this cell</li>'
        return (
            '<section aria-labelledby="legend-h"><h2 id="legend-h">Legend</h2>'
            f'<ul class="legend">{items}</ul></section>'
        )

    # -- matrix ----------------------------------------------------------------

    def matrix(self) -> str:
        # Suite order (the order tests ran in), not alphabetical: build before attach, etc.
        tests_by_group: dict[str, dict[str, None]] = defaultdict(dict)
        for cell in self.cells:
            for test in cell.tests:
                tests_by_group[test.group][test.name] = None
        lookup = {(c.cell_id, t.name): t for c in self.cells for t in c.tests}
        width = len(self.cells) + 1

        head = ['<th class="corner" scope="col">test \\ kernel, module / responder</th>']
        head += [self.column_header(c) for c in self.cells]
        body = []
        for group in tests_by_group:
            body.append(
                f'<tr class="group"><th scope="colgroup" colspan="{width}">{_e(group)}</th></tr>'
            )
            for name in tests_by_group[group]:
                short = name[len(group) + 1 :] if name.startswith(group + "/") else name
                row = [f'<th scope="row" title="{_e(name)}">{_e(short)}</th>']
                for cell in self.cells:
                    row.append(self.matrix_cell(cell, name, lookup.get((cell.cell_id, name))))
                body.append(f"<tr>{''.join(row)}</tr>")
        if not tests_by_group:
            body.append(f'<tr><td colspan="{width}">no test results</td></tr>')

        foot = ['<th scope="row">reproduce</th>']
        for cell in self.cells:
            if cell.overall in (*BAD, Status.ERROR) and cell.reproducer:
                foot.append(f'<td><code class="repro">{_e(cell.reproducer)}</code></td>')
            else:
                foot.append("<td></td>")
        return (
            '<section aria-labelledby="matrix-h"><h2 id="matrix-h">Matrix</h2>'
            '<div class="matrix-wrap">'
            '<table class="matrix" id="matrix">'
            f"<thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody>"
            f"<tfoot><tr>{''.join(foot)}</tr></tfoot>"
            "</table></div></section>"
        )

    def column_header(self, cell: Cell) -> str:
        k = cell.kernel
        status = cell.overall
        arts = [self.link(cell.artifacts.get(key), label) for key, label in CELL_ARTIFACTS.items()]
        arts += [
            self.link(rel, label)
            for label, rel in cell.artifacts.items()
            if label not in CELL_ARTIFACTS
        ]
        arts_html = "".join(f"<li>{a}</li>" for a in arts)
        detail = ""
        if status in (*BAD, Status.ERROR):
            detail = f' <a href="#{_e(_anchor(cell.cell_id))}">details</a>'
        title = cell.message or STATUS_HELP[status]
        badge = _badge(status, title=title)
        if status is Status.SANITIZER:
            findings = cell.findings
            title = "\n".join(f.headline for f in findings[:10]) or title
            href = self.report_link(findings)
            badge = _badge(status, href=href, title=title, text=_kinds_text(findings))
        return (
            f'<th scope="col" class="col col-{status.value}" data-cell="{_e(cell.cell_id)}">'
            f'<div class="series">{_e(k.get("series", "?"))}</div>'
            f'<div class="abi">{_e(k.get("abi", "?"))}</div>'
            f'<div class="abi">{_e(k.get("release", "?"))} · {_e(k.get("version", "?"))}</div>'
            f'<div class="combo"><b{_provenance_title(cell)}>{_e(cell.module)}</b> module / '
            f"<b>{_e(cell.responder)}</b> responder · {_e(cell.accel)}</div>"
            f"{_provenance_line(cell)}{badge}{detail}"
            f'<ul class="arts">{arts_html}</ul>'
            "</th>"
        )

    def matrix_cell(self, cell: Cell, name: str, test: TestResult | None) -> str:
        attrs = f'data-cell="{_e(cell.cell_id)}" data-test="{_e(name)}"'
        if test is None:
            why = "not run" if cell.status is Status.PASS else f"cell {cell.status.value}"
            absent = f'<span class="absent" title="{_e(why)}">—</span>'
            return f'<td {attrs} data-status="none">{absent}</td>'
        log = self.test_log(test)
        title = f"{test.name}: {test.status.label}"
        if test.status is Status.KNOWN and test.known_failure:
            title += f" (known failure: {test.known_failure.get('reason', '')})"
        if test.findings:
            title = f"{test.name}: {test.status.label}\n" + "\n".join(
                f.headline for f in test.findings[:10]
            )
        elif test.message:
            title += f"\n{test.message[:400]}"
        if test.measurements:
            title += f"\n{format_measurements(test.measurements)}"
        new = ""
        if (cell.cell_id, name) in self.new_failures:
            new = '<span class="new">new</span>'
        text = _kinds_text(test.findings)
        if text and test.status is Status.KNOWN:  # a kernel bug of its own, named by an entry
            text = f"{Status.KNOWN.label} · {text}"
        badge = _badge(test.status, href=log, title=title, text=text)
        meas = self.measurements_list(test)
        return f'<td {attrs} data-status="{test.status.value}">{badge}{new}{meas}</td>'

    def measurements_list(self, test: TestResult) -> str:
        """The test's measurements, one ``name = value`` line each (nothing if none)."""
        if not test.measurements:
            return ""
        items = "".join(
            f"<li><code>{_e(format_measurement(k, v))}</code></li>"
            for k, v in test.measurements.items()
        )
        return f'<ul class="meas" aria-label="measurements">{items}</ul>'

    def report_link(self, findings: list[SanitizerFinding]) -> str | None:
        """The first sanitizer report text that exists, for a badge to link."""
        return next((f.artifact for f in findings if self.exists(f.artifact)), None)

    def test_log(self, test: TestResult) -> str | None:
        """The artifact a badge links to: a sanitizer report first, else the test's 'log'
        if present, else its first file."""
        preferred = [
            *(f.artifact for f in test.findings),
            test.artifacts.get(TEST_LOG),
            *test.artifacts.values(),
        ]
        for rel in preferred:
            if rel and self.exists(rel):
                return rel
        return None

    # -- details -------------------------------------------------------------

    def details(self) -> str:
        bad = [c for c in self.cells if c.overall in (*BAD, Status.ERROR)]
        if not bad:
            return (
                '<section aria-labelledby="fail-h"><h2 id="fail-h">Failures</h2>'
                "<p>No failures and no harness errors.</p></section>"
            )
        out = ['<section aria-labelledby="fail-h"><h2 id="fail-h">Failures and harness errors</h2>']
        for cell in bad:
            out.append(
                f'<section class="cell-detail" id="{_e(_anchor(cell.cell_id))}">'
                f"<h3>{_badge(cell.overall, text=_kinds_text(cell.findings))} {_e(cell.cell_id)}"
                f' <span class="abi">{_e(cell.kernel.get("abi", ""))}</span></h3>'
            )
            if cell.status is not Status.PASS:
                out.append(
                    f"<p>Cell {_e(cell.status.value)}: {_e(STATUS_HELP[cell.status])}</p>"
                    f"<pre>{_e(cell.message or '(no message)')}</pre>"
                )
            items = []
            for test in cell.tests:
                if test.status not in (*BAD, Status.ERROR):
                    continue
                log = self.test_log(test)
                name = f'<a href="{_href(log)}">{_e(test.name)}</a>' if log else _e(test.name)
                items.append(
                    f"<li>{_badge(test.status, text=_kinds_text(test.findings))} {name}"
                    f"{self.findings_list(test.findings)}"
                    f"{self.measurements_list(test)}"
                    f"<pre>{_e(test.message or '(no message)')}</pre>"
                    f"{self.test_reproducer(cell, test.name)}</li>"
                )
            if items:
                out.append(f'<ul class="failures">{"".join(items)}</ul>')
            if cell.reproducer:
                out.append(f'<p>Reproduce:</p><code class="repro">{_e(cell.reproducer)}</code>')
            out.append("</section>")
        out.append("</section>")
        return "".join(out)

    @staticmethod
    def test_reproducer(cell: Cell, test: str) -> str:
        """The command that reruns this one test, for a contributor to paste."""
        line = cell.reproducer_for(test)
        return f'<code class="repro">{_e(line)}</code>' if line else ""

    def findings_list(self, findings: list[SanitizerFinding]) -> str:
        """Each sanitizer report: its kind, its first line, a link to its text."""
        if not findings:
            return ""
        items = []
        for finding in findings:
            kind = _badge(
                Status.SANITIZER,
                href=finding.artifact if self.exists(finding.artifact) else None,
                text=finding.label,
            )
            items.append(
                f"<li>{kind} <code>{_e(finding.headline)}</code> "
                f"{self.link(finding.artifact, 'report')}</li>"
            )
        return f'<ul class="findings">{"".join(items)}</ul>'

    def known(self) -> str:
        rows = [(c, t) for c in self.cells for t in c.tests if t.status is Status.KNOWN]
        if not rows:
            return ""
        items = []
        for cell, test in rows:
            entry = test.known_failure or {}
            issue = str(entry.get("issue", ""))
            issue_html = (
                f'<a href="{_e(issue)}" rel="noopener noreferrer">{_e(issue)}</a>'
                if issue.startswith(("https://", "http://"))
                else _e(issue)
            )
            items.append(
                f"<li>{_e(cell.cell_id)} <code>{_e(test.name)}</code>: "
                f"{_e(entry.get('reason', ''))} ({issue_html}; expires "
                f"{_e(entry.get('expires', '?'))}){self.findings_list(test.findings)}</li>"
            )
        return (
            '<section aria-labelledby="known-h"><h2 id="known-h">Known failures</h2>'
            f"<ul>{''.join(items)}</ul></section>"
        )

    def retries(self) -> str:
        """Boots tried again after dying before ssh, with the serial logs of the failed ones."""
        items = []
        for cell in self.cells:
            logs = " ".join(
                self.link(rel, Path(rel).name)
                for label, rel in sorted(cell.artifacts.items())
                if label.startswith("serial_attempt")
            )
            items += [
                f"<li>{_e(cell.cell_id)}: {_e(line)} {logs}</li>" for line in cell.boot_retries
            ]
        if not items:
            return ""
        return (
            '<section aria-labelledby="retry-h">'
            '<h2 id="retry-h">Boots retried (infrastructure, not a verdict)</h2>'
            f"<ul>{''.join(items)}</ul></section>"
        )

    def footer(self) -> str:
        files = [
            self.link(rel, rel)
            for rel in (RESULTS_FILE, "junit.xml", "summary.md")
            if self.exists(rel)
        ]
        listing = " · ".join(files) if files else "results.json not written yet"
        return f"<footer>Generated by vhba-lab from the same data as {listing}.</footer>"


def render(run: Run, run_dir: Path, previous: Run | None = None) -> str:
    """The page as a string; links are checked against ``run_dir``."""
    return _Page(run, run_dir, previous).render()


def write_html(run: Run, run_dir: Path, previous: Run | None = None) -> Path:
    path = run_dir / INDEX_FILE
    path.write_text(render(run, run_dir, previous), encoding="utf-8")
    return path
