"""The results model: statuses, exit codes, schema, JSON round trip, merge, latest link.

``build_sample_run`` is also used by the other report tests (loaded by path,
so it works whatever pytest import mode is configured).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from lab.cell.sanitizers import Kind
from lab.errors import LabError, UsageError
from lab.report.results import (
    MAX_MEASUREMENT_CHARS,
    Cell,
    Run,
    SanitizerFinding,
    Status,
    TestResult,
    clean_measurements,
    fixes,
    format_measurements,
    load_run,
    regressions,
    validate,
    write_run,
)
from lab.report.write import merge_runs, write_report

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=timezone.utc)
HOST = {
    "hostname": "lab-a",
    "qemu_version": "7.2.19",
    "python": "3.11.7",
    "lab_commit": "abc1234",
}
KERNELS = {
    "3.16": ("3.16.85-1", "3.16.0-11-amd64", "jessie"),
    "4.19": ("4.19.304-1", "4.19.0-26-amd64", "buster"),
    "5.10": ("5.10.237-1", "5.10.0-35-amd64", "bullseye"),
    "6.9": ("6.9.12-1", "6.9.12-amd64", "sid"),
    "6.12": ("6.12.57-1", "6.12.57+deb13-amd64", "trixie"),
}
CELL_FILES = ("serial", "build_log", "dmesg", "responder_log", "cdb_trace")
TESTS = [
    ("spc", "spc/test_inquiry_standard"),
    ("spc", "spc/test_test_unit_ready"),
    ("mmc", "mmc/test_get_configuration"),
    ("mmc", "mmc/test_read_toc"),
    ("media", "media/test_tray_lock"),
]


def kernel(series: str) -> dict[str, str]:
    version, abi, release = KERNELS[series]
    return {"series": series, "version": version, "abi": abi, "release": release}


def make_cell(
    run_dir: Path | None,
    series: str,
    module: str = "ours",
    responder: str = "ours",
    *,
    status: Status = Status.PASS,
    tests: dict[str, Status] | None = None,
    missing: tuple[str, ...] = (),
    message: str | None = None,
) -> Cell:
    """A cell whose artifacts exist as real files under ``run_dir`` (except ``missing``)."""
    cell_id = f"{series}-{module}-{responder}"
    artifacts = {}
    for label in CELL_FILES:
        rel = f"{cell_id}/{label}.txt"
        artifacts[label] = rel
        if run_dir is not None and label not in missing:
            (run_dir / cell_id).mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_text(f"{label} of {cell_id}\n")
    results = []
    for group, name in TESTS:
        if tests is not None and name not in tests:
            continue
        st = (tests or {}).get(name, Status.PASS)
        rel = f"{cell_id}/{name}/log.txt"
        if run_dir is not None and name not in missing:
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_text(f"log of {name} in {cell_id}\n")
        results.append(
            TestResult(
                name=name,
                group=group,
                status=st,
                duration_s=1.5,
                message=None if st is Status.PASS else f"{name} said {st.value}",
                artifacts={"log": rel},
                known_failure=(
                    {
                        "kernel": series,
                        "test": name,
                        "reason": "sr driver quirk",
                        "issue": "https://example.invalid/bug/1",
                        "expires": "2027-01-31",
                    }
                    if st is Status.KNOWN
                    else None
                ),
            )
        )
    return Cell(
        cell_id=cell_id,
        kernel=kernel(series),
        module=module,
        responder=responder,
        accel="tcg",
        status=status,
        duration_s=60.0,
        tests=results,
        artifacts=artifacts,
        reproducer=f"vhba-lab run --kernel {series} --module {module} --responder {responder}",
        message=message,
    )


def build_sample_run(run_dir: Path | None, run_id: str = "20261124T100000Z-a") -> Run:
    """Five kernels, mixed statuses, one cell that never booted, some missing artifacts."""
    cells = [
        make_cell(
            run_dir,
            "6.12",
            tests={
                "spc/test_inquiry_standard": Status.PASS,
                "spc/test_test_unit_ready": Status.FAIL,
                "mmc/test_get_configuration": Status.ERROR,
                "mmc/test_read_toc": Status.PASS,
                "media/test_tray_lock": Status.KNOWN,
            },
            missing=("dmesg",),
        ),
        make_cell(run_dir, "4.19"),
        make_cell(
            run_dir,
            "3.16",
            status=Status.ERROR,
            tests={},
            missing=("dmesg", "responder_log", "cdb_trace"),
            message="BootTimeoutError: no ssh after 300 s",
        ),
        make_cell(
            run_dir,
            "5.10",
            "upstream",
            "cdemu",
            tests={
                "spc/test_inquiry_standard": Status.PASS,
                "spc/test_test_unit_ready": Status.PASS,
                "mmc/test_read_toc": Status.FAIL,
                "media/test_tray_lock": Status.SKIP,
            },
        ),
        make_cell(run_dir, "6.9"),
    ]
    return Run(
        run_id=run_id,
        started=T0,
        finished=T0 + timedelta(minutes=12, seconds=5),
        host=dict(HOST),
        cells=cells,
    )


KASAN_TITLE = "BUG: KASAN: slab-use-after-free in vhba_ctl_read+0x1e4/0x560 [vhba]"
LOCKDEP_TITLE = "WARNING: possible circular locking dependency detected"


def add_sanitizer(
    run: Run,
    run_dir: Path | None,
    cell_id: str = "6.9-ours-ours",
    name: str = "mmc/test_get_configuration",
    kinds: tuple[Kind, ...] = (Kind.KASAN,),
) -> TestResult:
    """Make one test a SANITIZER result whose findings' report files exist under ``run_dir``."""
    titles = {Kind.KASAN: KASAN_TITLE, Kind.LOCKDEP: LOCKDEP_TITLE}
    test = next(t for t in run.cell(cell_id).tests if t.name == name)
    test.status = Status.SANITIZER
    test.findings = []
    for n, kind in enumerate(kinds, start=1):
        rel = f"{cell_id}/{name}/sanitizer-{n}.txt"
        if run_dir is not None:
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_text(
                f"[   41.263104] {'=' * 66}\n[   41.263512] {titles[kind]}\n"
                "[   41.263988] Read of size 8 at addr ffff88800a1b2c40 by task vhba-resp/412\n"
                f"[   41.277814] {'=' * 66}\n"
            )
        test.artifacts[f"sanitizer-{n}"] = rel
        test.findings.append(SanitizerFinding(kind, titles[kind], rel))
    test.message = "; ".join(titles[k] for k in kinds)
    return test


STALL = {"other_drive_read_s": 0.8, "seed": 123456789}


def add_measurements(
    run: Run,
    cell_id: str = "4.19-ours-ours",
    name: str = "spc/test_inquiry_standard",
    values: dict[str, float | int | str] | None = None,
) -> TestResult:
    """Give one test (a PASS in the sample) what ``record_property`` would have recorded."""
    test = next(t for t in run.cell(cell_id).tests if t.name == name)
    test.measurements = dict(STALL if values is None else values)
    return test


def simple_run(*statuses: Status, cell_status: Status = Status.PASS) -> Run:
    tests = dict(zip([n for _, n in TESTS], statuses))
    cell = make_cell(None, "6.12", status=cell_status, tests=tests)
    return Run("r1", T0, T0, dict(HOST), [cell])


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"] or "")
        if tag == "a" and found.get("href") is not None:
            self.hrefs.append(found["href"] or "")


def broken_links(index: Path) -> list[str]:
    """Every href in ``index`` that does not resolve (external http(s) links aside)."""
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    broken = []
    for href in parser.hrefs:
        if href.startswith("#"):
            if href[1:] not in parser.ids:
                broken.append(href)
            continue
        parsed = urlparse(href)
        if parsed.scheme in ("http", "https"):
            continue
        assert not parsed.scheme, f"unexpected link scheme in {href}"
        target = index.parent / unquote(parsed.path)
        if not target.exists():
            broken.append(href)
    assert parser.hrefs, "index.html has no links at all"
    return broken


# -- statuses and exit codes ------------------------------------------------


def test_status_order_is_kcidb_like() -> None:
    order = sorted(Status, key=lambda s: s.severity, reverse=True)
    assert order == [
        Status.SANITIZER, Status.FAIL, Status.ERROR, Status.PASS, Status.KNOWN, Status.SKIP,
    ]  # fmt: skip
    assert Status.worst([Status.FAIL, Status.SANITIZER, Status.ERROR]) is Status.SANITIZER
    assert Status.worst([Status.PASS, Status.KNOWN, Status.SKIP]) is Status.PASS
    assert Status.worst([Status.ERROR, Status.FAIL]) is Status.FAIL
    assert Status.worst([Status.KNOWN, Status.SKIP]) is Status.KNOWN
    assert Status.worst([]) is Status.SKIP
    assert Status.worst([], default=Status.ERROR) is Status.ERROR


def test_sanitizer_is_the_worst_verdict_and_exits_1() -> None:
    run = build_sample_run(None)
    add_sanitizer(run, None)
    assert run.cell("6.9-ours-ours").overall is Status.SANITIZER
    assert run.status is Status.SANITIZER
    assert run.verdict() == (1, "1 cell(s) with kernel sanitizer findings, 2 cell(s) failed")
    only = simple_run(Status.PASS, Status.PASS)
    add_sanitizer(only, None, "6.12-ours-ours", "spc/test_inquiry_standard")
    assert only.verdict() == (1, "1 cell(s) with kernel sanitizer findings")
    assert only.counts()[Status.SANITIZER] == 1


def test_cell_overall_is_worst_of_setup_and_tests() -> None:
    run = build_sample_run(None)
    assert run.cell("6.12-ours-ours").overall is Status.FAIL
    assert run.cell("3.16-ours-ours").overall is Status.ERROR
    assert run.cell("4.19-ours-ours").overall is Status.PASS
    assert run.status is Status.FAIL


@pytest.mark.parametrize(
    ("statuses", "cell_status", "code"),
    [
        ((Status.PASS, Status.KNOWN, Status.SKIP), Status.PASS, 0),
        ((Status.PASS, Status.FAIL), Status.PASS, 1),
        ((Status.PASS, Status.ERROR), Status.PASS, 2),
        ((Status.FAIL, Status.ERROR), Status.PASS, 1),  # FAIL wins over ERROR
        ((Status.PASS,), Status.ERROR, 2),
        ((Status.SKIP, Status.SKIP), Status.PASS, 2),  # nothing verified
        ((Status.KNOWN,), Status.PASS, 0),
    ],
)
def test_exit_codes(statuses: tuple[Status, ...], cell_status: Status, code: int) -> None:
    assert simple_run(*statuses, cell_status=cell_status).exit_code == code


def test_empty_run_is_an_error() -> None:
    run = Run("r0", T0, T0, dict(HOST), [])
    assert run.exit_code == 2
    assert run.status is Status.ERROR


def test_matrix_order_sorts_series_numerically() -> None:
    run = build_sample_run(None)
    assert [c.cell_id for c in run.sorted_cells()] == [
        "3.16-ours-ours",
        "4.19-ours-ours",
        "5.10-upstream-cdemu",
        "6.9-ours-ours",
        "6.12-ours-ours",
    ]


# -- schema and JSON --------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    run = build_sample_run(tmp_path)
    path = write_run(run, tmp_path)
    loaded = load_run(path)
    assert loaded == run
    assert load_run(tmp_path) == run  # a run directory works too
    data = json.loads(path.read_text())
    assert data["exit_code"] == 1 and data["status"] == "fail"
    assert {c["cell_id"]: c["overall"] for c in data["cells"]}["3.16-ours-ours"] == "error"


def test_schema_accepts_sample() -> None:
    validate(build_sample_run(None).to_json())


def test_sanitizer_findings_round_trip_through_the_schema(tmp_path: Path) -> None:
    run = build_sample_run(tmp_path)
    add_sanitizer(run, tmp_path, kinds=(Kind.KASAN, Kind.LOCKDEP))
    loaded = load_run(write_run(run, tmp_path))
    assert loaded == run
    test = {t.name: t for t in loaded.cell("6.9-ours-ours").tests}["mmc/test_get_configuration"]
    assert test.kinds == [Kind.KASAN, Kind.LOCKDEP]
    assert test.findings[0] == SanitizerFinding(
        Kind.KASAN, KASAN_TITLE, "6.9-ours-ours/mmc/test_get_configuration/sanitizer-1.txt"
    )
    data = json.loads((tmp_path / "results.json").read_text())
    row = data["cells"][-1]["tests"][2]
    assert row["status"] == "sanitizer"
    assert row["findings"][0] == {
        "kind": "kasan", "title": KASAN_TITLE, "artifact": test.findings[0].artifact,
    }  # fmt: skip
    assert data["status"] == "sanitizer" and data["exit_code"] == 1


def test_results_written_before_findings_existed_still_load() -> None:
    data = build_sample_run(None).to_json()
    for cell in data["cells"]:
        for test in cell["tests"]:
            del test["findings"]
    assert Run.from_json(data) == build_sample_run(None)


def test_measurements_round_trip_with_their_types(tmp_path: Path) -> None:
    run = build_sample_run(tmp_path)
    add_measurements(run)
    add_measurements(run, "6.12-ours-ours", "spc/test_test_unit_ready", {"note": "slow drive"})
    loaded = load_run(write_run(run, tmp_path))
    assert loaded == run
    passed = loaded.cell("4.19-ours-ours").tests[0]
    assert passed.status is Status.PASS and passed.measurements == STALL
    assert isinstance(passed.measurements["seed"], int)
    assert loaded.cell("6.12-ours-ours").tests[1].measurements == {"note": "slow drive"}
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {t["name"]: t for t in data["cells"][1]["tests"]}
    assert rows["spc/test_inquiry_standard"]["measurements"] == STALL
    assert rows["spc/test_test_unit_ready"]["measurements"] == {}  # always written


def test_results_written_before_measurements_existed_still_validate_and_load(
    tmp_path: Path,
) -> None:
    data = build_sample_run(None).to_json()
    for cell in data["cells"]:
        for test in cell["tests"]:
            del test["measurements"]
    assert data["schema_version"] == 1
    validate(data)
    (tmp_path / "results.json").write_text(json.dumps(data))
    loaded = load_run(tmp_path)
    assert loaded == build_sample_run(None)
    assert all(t.measurements == {} for c in loaded.cells for t in c.tests)


def test_merged_runs_keep_measurements(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_run = Run("a", T0, T0, dict(HOST), [make_cell(a_dir, "4.19")])
    b_run = Run("b", T0, T0, dict(HOST), [make_cell(b_dir, "6.12")])
    add_measurements(a_run)
    add_measurements(b_run, "6.12-ours-ours", "mmc/test_read_toc", {"seed": 7})
    write_report(a_run, a_dir, update_latest=False)
    write_report(b_run, b_dir, update_latest=False)
    merged = merge_runs([a_dir, b_dir], tmp_path / "merged")
    assert merged.cell("4.19-ours-ours").tests[0].measurements == STALL
    toc = {t.name: t for t in merged.cell("6.12-ours-ours").tests}["mmc/test_read_toc"]
    assert toc.measurements == {"seed": 7}
    assert load_run(tmp_path / "merged") == merged


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("other_drive_read_s", 0.8), ("seed", 123456789)], STALL),
        ([("seed", 1), ("seed", 2)], {"seed": 2}),  # the last value wins
        ([("ok", True), ("obj", {"a": 1}), ("none", None), ("lst", [1])], {}),
        ([("", 1), (3, 1), ("triple", 1, 2), "not-a-pair"], {}),
        ([("inf", float("inf")), ("nan", float("nan"))], {"inf": "inf", "nan": "nan"}),
        ([("note", "two\n  lines\t")], {"note": "two lines"}),
        ([("long", "x" * 500)], {"long": "x" * MAX_MEASUREMENT_CHARS}),
        ([], {}),
    ],
)
def test_clean_measurements_keeps_what_reports_can_show(
    pairs: list[object], expected: dict[str, object]
) -> None:
    assert clean_measurements(pairs) == expected


def test_measurements_read_as_name_equals_value() -> None:
    assert format_measurements(STALL) == "other_drive_read_s = 0.8, seed = 123456789"
    assert format_measurements({}) == ""


def test_schema_string_limit_is_the_cleaning_limit() -> None:
    schema = json.loads((Path(__file__).parents[2] / "schemas/results.schema.json").read_text())
    string = schema["$defs"]["measurements"]["additionalProperties"]["oneOf"][1]
    assert string["maxLength"] == MAX_MEASUREMENT_CHARS
    assert "measurements" not in schema["$defs"]["test"]["required"]


def _mutations() -> list[tuple[str, Callable[[dict], None]]]:
    def drop_run_id(d: dict) -> None:
        del d["run_id"]

    def bad_status(d: dict) -> None:
        d["cells"][0]["tests"][0]["status"] = "xfail"

    def extra_field(d: dict) -> None:
        d["cells"][0]["colour"] = "red"

    def absolute_artifact(d: dict) -> None:
        d["cells"][0]["artifacts"]["serial"] = "/etc/passwd"

    def escaping_artifact(d: dict) -> None:
        d["cells"][0]["tests"][0]["artifacts"]["log"] = "../other-run/log.txt"

    def bad_module(d: dict) -> None:
        d["cells"][0]["module"] = "Vendor tree"  # module kinds are [a-z][a-z0-9]*

    def latest_id(d: dict) -> None:
        d["run_id"] = "latest"

    def multi_line_reproducer(d: dict) -> None:
        d["cells"][0]["reproducer"] = "a\nb"

    def known_without_entry(d: dict) -> None:
        for t in d["cells"][0]["tests"]:
            t["known_failure"] = None

    def bad_series(d: dict) -> None:
        d["cells"][0]["kernel"]["series"] = "six"

    def bad_time(d: dict) -> None:
        d["started"] = "yesterday"

    def sanitizer_without_findings(d: dict) -> None:
        d["cells"][0]["tests"][0]["status"] = "sanitizer"

    def findings_on_a_pass(d: dict) -> None:
        d["cells"][0]["tests"][0]["findings"] = [
            {"kind": "kasan", "title": "BUG: KASAN: x in y", "artifact": "a/sanitizer-1.txt"}
        ]

    def unknown_finding_kind(d: dict) -> None:
        d["cells"][0]["tests"][0]["status"] = "sanitizer"
        d["cells"][0]["tests"][0]["findings"] = [
            {"kind": "valgrind", "title": "x", "artifact": "a/sanitizer-1.txt"}
        ]

    def escaping_finding_artifact(d: dict) -> None:
        d["cells"][0]["tests"][0]["status"] = "sanitizer"
        d["cells"][0]["tests"][0]["findings"] = [
            {"kind": "kasan", "title": "x", "artifact": "../elsewhere/sanitizer-1.txt"}
        ]

    def measurement(value: object, name: str = "m") -> Callable[[dict], None]:
        def mutate(d: dict) -> None:
            d["cells"][0]["tests"][0]["measurements"] = {name: value}

        return mutate

    measurement_mutations = [
        ("measurement_bool", measurement(True)),
        ("measurement_null", measurement(None)),
        ("measurement_list", measurement([1, 2])),
        ("measurement_object", measurement({"a": 1})),
        ("measurement_multi_line", measurement("a\nb")),
        ("measurement_too_long", measurement("x" * (MAX_MEASUREMENT_CHARS + 1))),
        ("measurement_empty_name", measurement(1, "")),
    ]
    return measurement_mutations + [
        (f.__name__, f)
        for f in (
            drop_run_id,
            bad_status,
            extra_field,
            absolute_artifact,
            escaping_artifact,
            bad_module,
            latest_id,
            multi_line_reproducer,
            known_without_entry,
            bad_series,
            bad_time,
            sanitizer_without_findings,
            findings_on_a_pass,
            unknown_finding_kind,
            escaping_finding_artifact,
        )
    ]


@pytest.mark.parametrize(("label", "mutate"), _mutations())
def test_schema_rejects_bad_data(label: str, mutate: Callable[[dict], None]) -> None:
    data = build_sample_run(None).to_json()
    mutate(data)
    with pytest.raises(LabError, match="does not match"):
        Run.from_json(data)


def test_write_run_refuses_invalid_run(tmp_path: Path) -> None:
    run = build_sample_run(None)
    run.cells[0].accel = "hvf"
    with pytest.raises(LabError, match="accel"):
        write_run(run, tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_load_run_missing_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="run directory"):
        load_run(tmp_path / "nope.json")


# -- regressions --------------------------------------------------------------


def test_regressions_lists_pass_to_fail_only() -> None:
    prev = build_sample_run(None, "prev")
    cur = build_sample_run(None, "cur")
    cur.cell("4.19-ours-ours").tests[0].status = Status.FAIL  # PASS -> FAIL
    cur.cell("6.9-ours-ours").tests[1].status = Status.ERROR  # PASS -> ERROR: not a regression
    found = regressions(prev, cur)
    assert [(r.cell_id, r.test) for r in found] == [("4.19-ours-ours", "spc/test_inquiry_standard")]


def test_pass_to_sanitizer_is_a_regression_and_back_a_fix() -> None:
    prev = build_sample_run(None, "prev")
    cur = build_sample_run(None, "cur")
    add_sanitizer(cur, None)
    (found,) = regressions(prev, cur)
    assert (found.cell_id, found.test, found.after) == (
        "6.9-ours-ours", "mmc/test_get_configuration", Status.SANITIZER,
    )  # fmt: skip
    (fixed,) = fixes(cur, prev)
    assert (fixed.before, fixed.after) == (Status.SANITIZER, Status.PASS)


def test_schema_kinds_are_the_sanitizer_kinds() -> None:
    schema = json.loads((Path(__file__).parents[2] / "schemas/results.schema.json").read_text())
    assert schema["$defs"]["finding"]["properties"]["kind"]["enum"] == [k.value for k in Kind]
    assert schema["$defs"]["status"]["enum"] == [s.value for s in Status]


# -- write_report, latest link ----------------------------------------------


def test_write_report_writes_all_files_and_latest(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    first = build_sample_run(reports / "run-1", "run-1")
    write_report(first, reports / "run-1")
    for name in ("results.json", "junit.xml", "summary.md", "index.html"):
        assert (reports / "run-1" / name).is_file(), name
    latest = reports / "latest"
    assert latest.is_symlink() and Path(latest.readlink()) == Path("run-1")

    second = build_sample_run(reports / "run-2", "run-2")
    write_report(second, reports / "run-2", previous=first)
    assert Path(latest.readlink()) == Path("run-2")
    assert load_run(reports / "run-1").run_id == "run-1"  # untouched
    assert load_run(latest).run_id == "run-2"


def test_write_report_never_overwrites_another_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-1"
    write_report(build_sample_run(run_dir, "run-1"), run_dir)
    with pytest.raises(LabError, match="refusing to overwrite"):
        write_report(build_sample_run(None, "run-2"), run_dir)
    assert load_run(run_dir).run_id == "run-1"
    write_report(build_sample_run(None, "run-1"), run_dir)  # same run: re-render is fine


def test_latest_must_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "latest").mkdir()
    with pytest.raises(LabError, match="not a symlink"):
        write_report(build_sample_run(tmp_path / "r", "r"), tmp_path / "r")


# -- merge --------------------------------------------------------------------


def _machine_run(root: Path, name: str, cells: list[Cell]) -> Path:
    run_dir = root / name
    run = Run(name, T0, T0 + timedelta(minutes=5), {**HOST, "hostname": name}, cells)
    write_report(run, run_dir, update_latest=False)
    return run_dir


def test_merge_two_machines_with_working_links(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_cells = [
        make_cell(a_dir, "4.19"),
        make_cell(a_dir, "6.12", tests={"spc/test_inquiry_standard": Status.FAIL}),
    ]
    b_cells = [make_cell(b_dir, "5.10", "upstream", "cdemu"), make_cell(b_dir, "6.12")]
    b_run = Run("b", T0, T0, dict(HOST), b_cells)
    add_sanitizer(b_run, b_dir, "5.10-upstream-cdemu", "mmc/test_read_toc")
    # a shared top-level file with different content on each machine
    for d in (a_dir, b_dir):
        (d / "host.log").write_text(f"host log of {d.name}\n")
    a_cells[0].artifacts["host"] = "host.log"
    b_cells[0].artifacts["host"] = "host.log"
    _machine_run(tmp_path, "a", a_cells)
    _machine_run(tmp_path, "b", b_cells)

    out = tmp_path / "merged"
    with caplog.at_level(logging.WARNING):
        merged = merge_runs([a_dir, b_dir], out)

    assert "6.12-ours-ours" in caplog.text  # clash is reported
    assert {c.cell_id for c in merged.cells} == {
        "4.19-ours-ours",
        "6.12-ours-ours",
        "5.10-upstream-cdemu",
    }
    clash = merged.cell("6.12-ours-ours")
    assert clash.origin == "b" and clash.overall is Status.PASS  # later input wins
    assert [m["run_id"] for m in merged.merged_from] == ["a", "b"]

    a_host = merged.cell("4.19-ours-ours").artifacts["host"]
    b_host = merged.cell("5.10-upstream-cdemu").artifacts["host"]
    assert a_host != b_host
    assert (out / a_host).read_text() == "host log of a\n"
    assert (out / b_host).read_text() == "host log of b\n"

    for cell in merged.cells:
        for rel in cell.all_artifacts():
            assert (out / rel).is_file(), rel
    (finding,) = merged.cell("5.10-upstream-cdemu").findings
    assert (out / finding.artifact).read_text().splitlines()[1].endswith(KASAN_TITLE)
    assert load_run(out) == merged
    assert broken_links(out / "index.html") == []
    assert not (tmp_path / "latest").exists()


def test_merge_refuses_non_empty_target(tmp_path: Path) -> None:
    src = tmp_path / "a"
    _machine_run(tmp_path, "a", [make_cell(src, "4.19")])
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        merge_runs([src], out)


def test_retried_boots_round_trip_through_the_schema(tmp_path: Path) -> None:
    run = build_sample_run(tmp_path)
    run.cell("6.12-ours-ours").boot_retries = ["attempt 1: PANIC (serial log serial-attempt1.log)"]
    data = run.to_json()
    validate(data)
    loaded = load_run(write_run(run, tmp_path))
    assert loaded.cell("6.12-ours-ours").boot_retries == run.cell("6.12-ours-ours").boot_retries
    assert loaded == run
