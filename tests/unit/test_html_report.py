"""index.html (matrix, links, escaping) and summary.md (the text summary)."""

from __future__ import annotations

import importlib.util
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lab.report import summary
from lab.report.html import write_html
from lab.report.results import Status
from lab.report.summary import render as render_summary
from lab.report.write import write_report

_spec = importlib.util.spec_from_file_location(
    "_report_samples", Path(__file__).with_name("test_results.py")
)
assert _spec and _spec.loader
samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(samples)


class _Matrix(HTMLParser):
    """Collects the matrix's column order, body cells and links."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[str] = []
        self.cells: dict[tuple[str, str], str] = {}
        self.badge_links: dict[tuple[str, str], str] = {}
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.codes: list[str] = []
        self._td: tuple[str, str] | None = None
        self._in_code = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "th" and "data-cell" in a:
            self.columns.append(a["data-cell"] or "")
        if tag == "td" and "data-cell" in a:
            key = (a["data-cell"] or "", a["data-test"] or "")
            self.cells[key] = a["data-status"] or ""
            self._td = key
        if tag == "a":
            self.hrefs.append(a.get("href") or "")
            if self._td and "badge" in (a.get("class") or ""):
                self.badge_links[self._td] = a.get("href") or ""
        if tag == "code":
            self._in_code = True
            self.codes.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._td = None
        if tag == "code":
            self._in_code = False

    def handle_data(self, data: str) -> None:
        if self._in_code:
            self.codes[-1] += data


def _page(tmp_path: Path, **kw: object) -> tuple[str, _Matrix]:
    run = samples.build_sample_run(tmp_path)
    for key, value in kw.items():
        setattr(run.cell("6.12-ours-ours").tests[1], key, value)
    index = write_html(run, tmp_path)
    text = index.read_text()
    parser = _Matrix()
    parser.feed(text)
    return text, parser


def test_matrix_columns_rows_and_statuses(tmp_path: Path) -> None:
    text, page = _page(tmp_path)
    assert 'id="matrix"' in text
    assert page.columns == [
        "3.16-ours-ours",
        "4.19-ours-ours",
        "5.10-upstream-cdemu",
        "6.9-ours-ours",
        "6.12-ours-ours",
    ]
    assert page.cells[("6.12-ours-ours", "spc/test_test_unit_ready")] == "fail"
    assert page.cells[("6.12-ours-ours", "mmc/test_get_configuration")] == "error"
    assert page.cells[("6.12-ours-ours", "media/test_tray_lock")] == "known"
    assert page.cells[("5.10-upstream-cdemu", "media/test_tray_lock")] == "skip"
    assert page.cells[("5.10-upstream-cdemu", "mmc/test_get_configuration")] == "none"
    assert page.cells[("3.16-ours-ours", "spc/test_inquiry_standard")] == "none"
    assert page.cells[("4.19-ours-ours", "mmc/test_read_toc")] == "pass"
    assert len(page.cells) == 5 * 5
    # groups appear in suite order (the order the tests ran in), each test once per row
    assert text.index(">spc<") < text.index(">mmc<") < text.index(">media<")


def test_badges_are_text_not_just_colour(tmp_path: Path) -> None:
    text, _ = _page(tmp_path)
    for status in Status:
        assert f'class="badge {status.value}"' in text
        assert f">{status.label}</" in text
    assert "<script" not in text.lower()  # static page, no JS


def test_badge_links_to_the_test_log(tmp_path: Path) -> None:
    _, page = _page(tmp_path)
    href = page.badge_links[("6.12-ours-ours", "spc/test_test_unit_ready")]
    assert href == "6.12-ours-ours/spc/test_test_unit_ready/log.txt"


def test_every_link_resolves_and_missing_artifacts_are_plain_text(tmp_path: Path) -> None:
    text, page = _page(tmp_path)
    assert samples.broken_links(tmp_path / "index.html") == []
    # 6.12 has no dmesg, 3.16 lacks three artifacts: shown as text, never linked
    assert "6.12-ours-ours/dmesg.txt" not in page.hrefs
    assert "3.16-ours-ours/cdb_trace.txt" not in page.hrefs
    assert "3.16-ours-ours/serial.txt" in page.hrefs
    assert text.count("dmesg: missing") == 2
    assert "CDB trace: missing" in text


def test_missing_test_log_means_no_link(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    (tmp_path / "6.12-ours-ours/spc/test_test_unit_ready/log.txt").unlink()
    page = _Matrix()
    page.feed(write_html(run, tmp_path).read_text())
    assert ("6.12-ours-ours", "spc/test_test_unit_ready") not in page.badge_links
    assert page.cells[("6.12-ours-ours", "spc/test_test_unit_ready")] == "fail"
    assert samples.broken_links(tmp_path / "index.html") == []


def test_reproducers_only_for_red_columns(tmp_path: Path) -> None:
    _, page = _page(tmp_path)
    repros = [c for c in page.codes if c.startswith("vhba-lab run")]
    assert "vhba-lab run --kernel 6.12 --module ours --responder ours" in repros
    assert "vhba-lab run --kernel 3.16 --module ours --responder ours" in repros
    assert "vhba-lab run --kernel 5.10 --module upstream --responder cdemu" in repros
    assert not any("--kernel 4.19" in c or "--kernel 6.9" in c for c in repros)


def test_text_from_results_is_escaped(tmp_path: Path) -> None:
    text, _ = _page(tmp_path, message='<script>alert("x")</script> & "quotes"')
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in text


def test_header_shows_run_host_accel_totals(tmp_path: Path) -> None:
    text, _ = _page(tmp_path)
    assert "20261124T100000Z-a" in text
    assert "lab-a" in text and "tcg" in text and "7.2.19" in text
    assert "exit code 1" in text
    assert "position:sticky" in text  # sticky header row


def test_regressions_are_flagged_new(tmp_path: Path) -> None:
    prev = samples.build_sample_run(None, "prev")
    prev.cell("6.12-ours-ours").tests[1].status = Status.PASS
    run = samples.build_sample_run(tmp_path)
    text = write_html(run, tmp_path, prev).read_text()
    assert text.count('<span class="new">new</span>') == 2  # legend + one badge


def test_sanitizer_badge_names_the_kind_and_links_the_report(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    test = samples.add_sanitizer(run, tmp_path)
    text = write_html(run, tmp_path).read_text()
    page = _Matrix()
    page.feed(text)
    key = ("6.9-ours-ours", "mmc/test_get_configuration")
    assert page.cells[key] == "sanitizer"
    report = test.findings[0].artifact
    assert page.badge_links[key] == report
    assert '<a class="badge sanitizer" title="mmc/test_get_configuration: SANITIZER' in text
    assert f'href="{report}">KASAN</a>' in text
    # the cell's column says KASAN too, links the report, and gets a details section
    header = text[text.index('data-cell="6.9-ours-ours"') :]
    header = header[: header.index("</th>")]
    assert 'class="col col-sanitizer"' in text
    assert f'href="{report}">KASAN</a>' in header
    assert 'href="#cell-6.9-ours-ours">details</a>' in header
    details = text[text.index('id="cell-6.9-ours-ours"') :]
    assert samples.KASAN_TITLE.replace("[", "") in details.replace("[", "")
    assert "vhba-lab run --kernel 6.9" in details
    assert samples.broken_links(tmp_path / "index.html") == []


def test_several_kinds_read_first_plus_count(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    samples.add_sanitizer(run, tmp_path, kinds=(samples.Kind.KASAN, samples.Kind.LOCKDEP))
    text = write_html(run, tmp_path).read_text()
    assert ">KASAN +1</a>" in text
    assert ">LOCKDEP</a> <code>WARNING: possible circular locking" in text


def test_sanitizer_with_its_report_missing_is_text_not_a_dead_link(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    test = samples.add_sanitizer(run, tmp_path)
    (tmp_path / test.findings[0].artifact).unlink()
    page = _Matrix()
    page.feed(write_html(run, tmp_path).read_text())
    key = ("6.9-ours-ours", "mmc/test_get_configuration")
    assert page.badge_links[key] == test.artifacts["log"]  # falls back to the test log
    assert samples.broken_links(tmp_path / "index.html") == []


def test_ordinary_run_shows_no_sanitizer_count(tmp_path: Path) -> None:
    text, _ = _page(tmp_path)
    header = text[: text.index("</header>")]
    assert "badge sanitizer" not in header
    assert 'class="badge sanitizer"' in text  # the legend still explains it


def _td(text: str, cell_id: str, name: str) -> str:
    """The matrix cell's HTML for one test in one cell."""
    start = text.index(f'<td data-cell="{cell_id}" data-test="{name}"')
    return text[start : text.index("</td>", start)]


def test_a_passing_test_shows_its_measurements_under_its_badge(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    test = samples.add_measurements(run)
    text = write_html(run, tmp_path).read_text()
    td = _td(text, "4.19-ours-ours", test.name)
    assert 'data-status="pass"' in td
    assert (
        '<ul class="meas" aria-label="measurements">'
        "<li><code>other_drive_read_s = 0.8</code></li>"
        "<li><code>seed = 123456789</code></li></ul>"
    ) in td
    assert "PASS\nother_drive_read_s = 0.8, seed = 123456789" in td  # the badge's tooltip
    assert 'class="meas"' not in _td(text, "6.9-ours-ours", test.name)  # none recorded there
    assert samples.broken_links(tmp_path / "index.html") == []


def test_a_failing_test_shows_its_measurements_in_the_details_too(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    samples.add_measurements(
        run, "6.12-ours-ours", "spc/test_test_unit_ready", {"blocks": 1000, "why": "<b>&"}
    )
    text = write_html(run, tmp_path).read_text()
    details = text[text.index('id="cell-6.12-ours-ours"') :]
    assert "<code>blocks = 1000</code>" in details
    assert "<code>why = &lt;b&gt;&amp;</code>" in text  # escaped like every result text
    assert "<b>&" not in text


def test_no_measurement_markup_without_measurements(tmp_path: Path) -> None:
    text, _ = _page(tmp_path)
    assert 'class="meas"' not in text


# -- summary.md -------------------------------------------------------------------


def test_summary_lists_measurements_of_passing_and_failing_tests() -> None:
    run = samples.build_sample_run(None)
    samples.add_measurements(run)
    samples.add_measurements(run, "6.12-ours-ours", "spc/test_test_unit_ready", {"seed": 7})
    text = render_summary(run)
    section = text[text.index("## Measurements") :]
    assert section.splitlines()[2:4] == [
        "- 4.19-ours-ours `spc/test_inquiry_standard` PASS: "
        "`other_drive_read_s = 0.8`, `seed = 123456789`",
        "- 6.12-ours-ours `spc/test_test_unit_ready` FAIL: `seed = 7`",
    ]
    assert "## Measurements" not in render_summary(samples.build_sample_run(None))


def test_summary_measurements_stay_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "MAX_MEASURED_TESTS", 5)  # the sample has only 19 tests
    run = samples.build_sample_run(None)
    tests = [t for c in run.sorted_cells() for t in c.tests]
    for n, test in enumerate(tests):
        test.measurements = {"n": n}
    text = render_summary(run)
    lines = [x for x in text.splitlines() if x.startswith("- ") and "`n = " in x]
    assert len(lines) == 5
    assert f"- ... and {len(tests) - 5} more tests: see results.json" in text


def test_summary_content() -> None:
    prev = samples.build_sample_run(None, "prev")
    prev.cell("6.12-ours-ours").tests[1].status = Status.PASS  # now FAIL: a regression
    prev.cell("4.19-ours-ours").tests[0].status = Status.FAIL  # now PASS: a fix
    text = render_summary(samples.build_sample_run(None), prev)
    assert text.startswith("# vhba-lab run 20261124T100000Z-a")
    assert "**Result: FAIL** (exit code 1: 2 cell(s) failed)" in text
    assert "5 cells, 19 test results: 2 fail, 1 error, 14 pass, 1 known, 1 skip" in text
    assert "| 3.16-ours-ours | 3.16 (3.16.0-11-amd64) | ours | ours | tcg | ERROR | none |" in text
    assert "### 6.12-ours-ours: FAIL (failure)" in text
    assert "- `spc/test_test_unit_ready` FAIL: spc/test_test_unit_ready said fail" in text
    assert "vhba-lab run --kernel 6.12 --module ours --responder ours" in text
    assert "- cell error: BootTimeoutError: no ssh after 300 s" in text
    assert "**Regressions (PASS -> FAIL): 1**" in text
    assert "- 6.12-ours-ours `spc/test_test_unit_ready`" in text
    assert "**Fixed (FAIL -> PASS): 1**" in text
    assert "## Known failures" in text and "sr driver quirk" in text


def test_summary_names_sanitizer_kinds_and_links_reports() -> None:
    prev = samples.build_sample_run(None, "prev")
    run = samples.build_sample_run(None)
    test = samples.add_sanitizer(run, None, kinds=(samples.Kind.KASAN, samples.Kind.LOCKDEP))
    text = render_summary(run, prev)
    assert "**Result: SANITIZER** (exit code 1: 1 cell(s) with kernel sanitizer findings" in text
    assert (
        "5 cells, 19 test results: 1 sanitizer, 2 fail, 1 error, 13 pass, 1 known, 1 skip" in text
    )
    assert (
        "| 6.9-ours-ours | 6.9 (6.9.12-amd64) | ours | ours | tcg | SANITIZER (KASAN, LOCKDEP) |"
        in text
    )
    assert "### 6.9-ours-ours: SANITIZER (KASAN, LOCKDEP) (kernel sanitizer finding)" in text
    assert f"- `{test.name}` SANITIZER (KASAN, LOCKDEP): {samples.KASAN_TITLE}" in text
    report = test.findings[0].artifact
    assert f"  - KASAN: `{samples.KASAN_TITLE}` ([sanitizer-1.txt]({report}))" in text
    assert "- 6.9-ours-ours `mmc/test_get_configuration` (SANITIZER)" in text  # a regression


def test_summary_of_a_green_run() -> None:
    text = render_summary(samples.simple_run(Status.PASS, Status.KNOWN))
    assert "exit code 0" in text
    assert "## Failures" not in text
    assert "Compared with" not in text


def test_write_report_links_its_own_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "r1"
    write_report(samples.build_sample_run(run_dir, "r1"), run_dir)
    text = (run_dir / "index.html").read_text()
    for name in ("results.json", "junit.xml", "summary.md"):
        assert f'href="{name}"' in text
    assert samples.broken_links(run_dir / "index.html") == []


def test_retried_boots_are_named_with_their_serial_logs_and_counted(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    cell = run.cell("6.12-ours-ours")
    cell.boot_retries = ["attempt 1: PANIC: Oops: int3 (serial log serial-attempt1.log)"]
    cell.artifacts["serial_attempt1"] = "cells/6.12-ours-ours/serial-attempt1.log"
    (tmp_path / "cells" / "6.12-ours-ours").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cells" / "6.12-ours-ours" / "serial-attempt1.log").write_text("Oops: int3\n")
    text = write_html(run, tmp_path).read_text()
    assert "<dt>boots retried</dt><dd>1</dd>" in text
    assert "Boots retried (infrastructure, not a verdict)" in text
    assert "attempt 1: PANIC: Oops: int3" in text
    assert 'href="cells/6.12-ours-ours/serial-attempt1.log"' in text
    md = render_summary(run)
    assert "## Boots retried (infrastructure, not a verdict)" in md
    assert "- 6.12-ours-ours: attempt 1: PANIC: Oops: int3" in md


def test_a_run_without_retried_boots_says_so(tmp_path: Path) -> None:
    text = write_html(samples.build_sample_run(tmp_path), tmp_path).read_text()
    assert "<dt>boots retried</dt><dd>0</dd>" in text
    assert "Boots retried" not in text


def test_each_failed_test_has_its_own_reproducer(tmp_path: Path) -> None:
    """A contributor reruns the one red test, not its whole cell (parameters left to -k)."""
    run = samples.build_sample_run(tmp_path)
    run.cell("6.12-ours-ours").tests[1].name = "spc/test_mode_page[2a]"
    write_html(run, tmp_path)
    page = _Matrix()
    page.feed((tmp_path / "index.html").read_text())
    cell = "vhba-lab run --kernel 6.12 --module ours --responder ours"
    assert f"{cell} -k test_mode_page" in page.codes
