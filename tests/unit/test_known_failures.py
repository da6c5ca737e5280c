"""Known failures: matching, expiry, the shipped file, and errors that name the line."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from lab.cell.sanitizers import Kind
from lab.errors import UsageError
from lab.report import known_failures
from lab.report.known_failures import KnownFailure, apply, now_passing, parse
from lab.report.results import Status, load_run, validate, write_run
from lab.report.write import write_report

_spec = importlib.util.spec_from_file_location(
    "_report_samples", Path(__file__).with_name("test_results.py")
)
assert _spec and _spec.loader
samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(samples)

TODAY = date(2026, 11, 24)

GOOD = """\
# comment
[[known]]
kernel = "6.12*"
test = "spc/test_test_unit_*"
reason = "TUR sense differs on 6.12"
issue = "https://example.invalid/bug/7"
expires = 2027-01-31

[[known]]
kernel = "5.10.0-35-amd64"
test = "mmc/test_read_toc"
module = "upstream"
reason = "upstream vhba drops the TOC"
issue = "cdemu#39"
expires = 2026-01-31
"""


def test_parse_good_file() -> None:
    entries = parse(GOOD, "kf.toml")
    assert [e.test for e in entries] == ["spc/test_test_unit_*", "mmc/test_read_toc"]
    assert entries[0].expires == date(2027, 1, 31)
    assert entries[0].module == "*"
    assert entries[1].module == "upstream"
    assert entries[0].source == "kf.toml:2"
    assert entries[1].source == "kf.toml:9"


def test_apply_marks_known_and_flags_expired() -> None:
    run = samples.build_sample_run(None)
    before = run.cell("6.12-ours-ours").tests[1].status
    out = apply(run, parse(GOOD, "kf.toml"), TODAY)

    assert run.cell("6.12-ours-ours").tests[1].status is before  # input untouched
    tur = {t.name: t for t in out.cell("6.12-ours-ours").tests}["spc/test_test_unit_ready"]
    assert tur.status is Status.KNOWN
    assert tur.known_failure is not None
    assert tur.known_failure["reason"] == "TUR sense differs on 6.12"
    assert tur.known_failure["expired"] is False

    toc = {t.name: t for t in out.cell("5.10-upstream-cdemu").tests}["mmc/test_read_toc"]
    assert toc.status is Status.FAIL  # matched by abi, but the entry expired
    assert toc.message is not None
    assert toc.message.startswith("known-failure entry expired on 2026-01-31: re-check or extend")
    assert "mmc/test_read_toc said fail" in toc.message  # original message kept
    assert toc.known_failure is not None and toc.known_failure["expired"] is True

    assert out.cell("6.12-ours-ours").overall is Status.ERROR  # its FAIL became KNOWN
    assert out.exit_code == 1  # 5.10 still fails: its entry expired


def test_error_is_never_masked() -> None:
    cell = samples.make_cell(None, "6.12", tests={"mmc/test_get_configuration": Status.ERROR})
    entry = KnownFailure("*", "*", "everything", "i", date(2030, 1, 1))
    test = apply(cell, [entry], TODAY).tests[0]
    assert test.status is Status.ERROR and test.known_failure is None


def test_sanitizer_is_never_masked() -> None:
    """Not even by an entry whose pattern and message glob match it: the kernel proved a bug."""
    run = samples.build_sample_run(None)
    test = samples.add_sanitizer(run, None)
    entry = KnownFailure("*", "*", "everything", "i", date(2030, 1, 1))
    out = {t.name: t for t in apply(run, [entry], TODAY).cell("6.9-ours-ours").tests}[test.name]
    assert out.status is Status.SANITIZER and out.known_failure is None
    assert apply(run, [entry], TODAY).exit_code == 1


SR_UAF = "BUG: KASAN: slab-use-after-free in scsi_block_when_processing_errors+0x2d/0x1f0"


def test_an_entry_naming_the_finding_masks_that_kernel_bug_and_keeps_its_report() -> None:
    """A bug of the kernel's own (sr's use-after-free after a hot unplug), not the module's."""
    run = samples.build_sample_run(None)
    test = samples.add_sanitizer(run, None)
    test.findings = [replace(test.findings[0], title=SR_UAF)]
    sr_bug = KnownFailure(
        "*", test.name, "sr frees its device early", "i", date(2030, 1, 1),
        finding="BUG: KASAN: slab-use-after-free in scsi_block_when_processing_errors+*",
    )  # fmt: skip
    out = {t.name: t for t in apply(run, [sr_bug], TODAY).cell("6.9-ours-ours").tests}[test.name]
    assert out.status is Status.KNOWN and out.findings == test.findings
    assert out.known_failure is not None and out.known_failure["finding"] == sr_bug.finding
    other = replace(sr_bug, finding="BUG: KASAN: slab-use-after-free in sr_*")
    out = {t.name: t for t in apply(run, [other], TODAY).cell("6.9-ours-ours").tests}[test.name]
    assert out.status is Status.SANITIZER and out.known_failure is None


def test_a_known_kernel_bug_keeps_its_reports_through_the_schema(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    test = samples.add_sanitizer(run, tmp_path)
    test.findings = [replace(test.findings[0], title=SR_UAF)]
    entry = KnownFailure("*", "*", "r", "i", date(2030, 1, 1), finding=SR_UAF)
    known = apply(run, [entry], TODAY)
    validate(known.to_json())
    loaded = load_run(write_run(known, tmp_path))
    out = {t.name: t for t in loaded.cell("6.9-ours-ours").tests}[test.name]
    assert out.status is Status.KNOWN and out.findings == test.findings
    assert loaded.exit_code == known.exit_code


def test_the_report_shows_a_known_kernel_bug_with_its_sanitizer_report(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    test = samples.add_sanitizer(run, tmp_path)
    test.findings = [replace(test.findings[0], title=SR_UAF)]
    entry = KnownFailure("*", "*", "sr frees early", "i", date(2030, 1, 1), finding=SR_UAF)
    write_report(apply(run, [entry], TODAY), tmp_path, update_latest=False)
    html = (tmp_path / "index.html").read_text()
    assert ">KNOWN · KASAN</a>" in html  # the matrix badge says both, and links the report
    known = html.split('id="known-h"', 1)[1]
    assert test.findings[0].artifact in known and "sr frees early" in known


def test_a_finding_in_the_module_is_never_masked() -> None:
    """A report whose faulting function is in vhba.ko is the module's, whatever an entry says."""
    run = samples.build_sample_run(None)
    test = samples.add_sanitizer(run, None)
    assert test.findings[0].title.endswith("[vhba]")
    entry = KnownFailure("*", "*", "r", "i", date(2030, 1, 1), finding="BUG: KASAN: *")
    out = {t.name: t for t in apply(run, [entry], TODAY).cell("6.9-ours-ours").tests}[test.name]
    assert out.status is Status.SANITIZER


def test_an_entry_naming_a_finding_masks_no_plain_failure() -> None:
    cell = samples.make_cell(None, "6.12", tests={"mmc/test_read_toc": Status.FAIL})
    entry = KnownFailure("*", "*", "r", "i", date(2030, 1, 1), finding="BUG: KASAN: *")
    assert apply(cell, [entry], TODAY).tests[0].status is Status.FAIL


def test_every_finding_of_the_test_must_match() -> None:
    run = samples.build_sample_run(None)
    test = samples.add_sanitizer(run, None, kinds=(Kind.KASAN, Kind.LOCKDEP))
    test.findings[0] = replace(test.findings[0], title=SR_UAF)
    entry = KnownFailure("*", "*", "r", "i", date(2030, 1, 1), finding=SR_UAF)
    out = {t.name: t for t in apply(run, [entry], TODAY).cell("6.9-ours-ours").tests}[test.name]
    assert out.status is Status.SANITIZER


def test_a_sanitizer_hit_keeps_an_entry_from_looking_fixed() -> None:
    cell = samples.make_cell(None, "6.12", tests={"mmc/test_read_toc": Status.PASS})
    other = samples.make_cell(None, "6.9", tests={"mmc/test_read_toc": Status.PASS})
    run = replace(samples.build_sample_run(None), cells=[cell, other])
    samples.add_sanitizer(run, None, "6.9-ours-ours", "mmc/test_read_toc")
    entry = KnownFailure("6.*", "mmc/test_read_toc", "r", "i", date(2030, 1, 1))
    assert now_passing(run, [entry]) == []


def test_exit_code_follows_known_failures() -> None:
    run = samples.simple_run(Status.PASS, Status.FAIL)
    entries = parse(GOOD, "kf.toml")
    assert run.exit_code == 1
    assert apply(run, entries, TODAY).exit_code == 0
    assert apply(run, entries, date(2027, 2, 1)).exit_code == 1  # expired the day after


def test_entry_applies_through_its_expiry_date() -> None:
    entry = parse(GOOD, "kf.toml")[0]
    assert not entry.expired(date(2027, 1, 31))
    assert entry.expired(date(2027, 2, 1))


def test_module_and_responder_filters() -> None:
    cell = samples.make_cell(None, "5.10", "ours", "ours", tests={"mmc/test_read_toc": Status.FAIL})
    entry = KnownFailure("5.10", "mmc/*", "r", "i", date(2030, 1, 1), module="upstream")
    assert apply(cell, [entry], TODAY).tests[0].status is Status.FAIL
    entry = KnownFailure("5.10", "mmc/*", "r", "i", date(2030, 1, 1), responder="o*")
    assert apply(cell, [entry], TODAY).tests[0].status is Status.KNOWN


def test_a_module_tree_shares_the_known_failures_it_is_known_as() -> None:
    """``--module-known-as upstream``: a copy of upstream vhba has upstream's known bugs."""
    tests = {"mmc/test_read_toc": Status.FAIL}
    copy = samples.make_cell(None, "6.12", "vhbacopy", "ours", tests=tests)
    entry = KnownFailure("*", "mmc/*", "r", "i", date(2030, 1, 1), module="upstream")
    assert apply(copy, [entry], TODAY).tests[0].status is Status.FAIL
    shared = replace(copy, module_provenance={"name": "vhbacopy", "known_as": "upstream"})
    assert apply(shared, [entry], TODAY).tests[0].status is Status.KNOWN


def test_message_glob_masks_only_that_symptom() -> None:
    cell = samples.make_cell(None, "6.12", tests={"mmc/test_read_toc": Status.FAIL})
    message = cell.tests[0].message or ""
    assert message, "the sample FAIL carries a message"
    narrow = KnownFailure("*", "mmc/*", "r", "i", date(2030, 1, 1), message=f"*{message[-8:]}")
    other = KnownFailure("*", "mmc/*", "r", "i", date(2030, 1, 1), message="*something else*")
    assert apply(cell, [other], TODAY).tests[0].status is Status.FAIL
    known = apply(cell, [narrow], TODAY).tests[0]
    assert known.status is Status.KNOWN
    assert known.known_failure and known.known_failure["message"] == narrow.message


def test_first_live_entry_wins_over_expired() -> None:
    cell = samples.make_cell(None, "6.12", tests={"media/test_tray_lock": Status.FAIL})
    old = KnownFailure("6.12", "media/*", "old", "i", date(2020, 1, 1))
    new = KnownFailure("6.12", "media/test_tray_lock", "new", "i", date(2030, 1, 1))
    test = apply(cell, [old, new], TODAY).tests[0]
    assert test.status is Status.KNOWN
    assert test.known_failure and test.known_failure["reason"] == "new"


def test_entries_whose_tests_now_pass() -> None:
    cell = samples.make_cell(
        None, "6.12", tests={"mmc/test_read_toc": Status.PASS, "media/test_tray_lock": Status.FAIL}
    )
    fixed = KnownFailure("6.12", "mmc/test_read_toc", "fixed?", "i", date(2030, 1, 1))
    still = KnownFailure("6.12", "media/*", "still broken", "i", date(2030, 1, 1))
    elsewhere = KnownFailure("4.19", "mmc/*", "did not run", "i", date(2030, 1, 1))
    run = apply(samples.build_sample_run(None), [], TODAY)
    run = replace(run, cells=[cell])
    assert now_passing(run, [fixed, still, elsewhere]) == [fixed]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (GOOD.replace("expires = 2027-01-31", 'expires = "2027-01-31"'), 7, "unquoted TOML date"),
        (GOOD.replace("expires = 2026-01-31", "expires = 2026-01-31T10:00:00"), 15, "TOML date"),
        (GOOD.replace('module = "upstream"', 'modul = "upstream"'), 12, "unknown field 'modul'"),
        (GOOD.replace('reason = "upstream vhba drops the TOC"\n', ""), 9, "lacks reason"),
        (GOOD.replace('test = "spc/test_test_unit_*"', "test = 3"), 4, "non-empty string"),
        (GOOD.replace('kernel = "6.12*"', 'kernel = ""'), 3, "non-empty string"),
    ],
)
def test_bad_entries_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(text, "kf.toml")
    message = str(info.value)
    assert message.startswith(f"kf.toml:{line}:"), message
    assert words in message


def test_invalid_toml_and_stray_keys() -> None:
    with pytest.raises(UsageError, match="not valid TOML"):
        parse("[[known]\n", "kf.toml")
    with pytest.raises(UsageError, match="unexpected top-level key"):
        parse('kernel = "6.12"\n', "kf.toml")


def test_shipped_file_has_a_header_and_every_entry_a_reason_and_expiry() -> None:
    path = known_failures.default_path()
    text = path.read_text()
    assert text.startswith("#")
    assert "[[known]]" in text and "expires" in text
    for entry in known_failures.load(path):
        assert entry.reason.strip() and entry.issue.strip(), entry
        assert entry.expires.year >= 2026, entry


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        known_failures.load(tmp_path / "nope.toml")


# Failure messages exactly as a 6.12-ours-cdemu run recorded them (tests.jsonl).
CDEMU_MESSAGES = {
    "cd_audio/test_play_audio_moves_pauses_and_resumes": "AssertionError: play never "
    "completed: {'playing': {'status': 17, 'track': 4, 'index': 1, 'abs': 865, 'rel': 34}, "
    "'ended': {'status': 20, 'track': 4, 'index': 1, 'abs': 1018, 'rel': 187}} "
    "assert 20 in (19, 21)",
    "spc/test_inquiry_raw_bytes": "AssertionError: VERSION 0: Linux skips VPD pages below "
    "SPC-2 assert 0 >= 3",
    "spc/test_request_sense_returns_the_last_error": "AssertionError: REQUEST SENSE gave "
    "00/00/15, the failed command 05/20/00 assert '00/00/15' == '05/20/00'   ",
    "spc/test_report_luns_lists_lun_0": "AssertionError: Report Luns command not supported "
    "(support mandatory in SPC-3)   sg_luns failed: Illegal request, Invalid opcode   ",
    "mmc/test_mode_page_2a_capabilities": "AssertionError: page length 54 overruns: 2a36 "
    "assert (54 + 2) <= 55",
    "multidevice/test_sixteen_drives": "lab.errors.GuestCommandError: cdemu-daemon never "
    "mapped device 5: Device mapping: DEV   SCSI CD-ROM     SCSI generic    0     /dev/sr1",
    "differential/test_same_view_as_qemu_scsi_cd": "AssertionError: differs from QEMU "
    "scsi-cd:   blockdev.ro: ours='0' qemu='1' assert not [\"blockdev.ro: ours='0' qemu='1'\"]",
}


@pytest.mark.parametrize("name", sorted(CDEMU_MESSAGES))
def test_shipped_cdemu_entries_match_only_their_symptom(name: str) -> None:
    entries = known_failures.load()
    statuses = {}
    for label, message in (
        ("seen", CDEMU_MESSAGES[name]),
        ("other", "AssertionError: something new broke"),
    ):
        cell = samples.make_cell(
            None, "6.12", "ours", "cdemu", tests={"mmc/test_read_toc": Status.FAIL}
        )
        test = replace(cell.tests[0], name=name, message=message)
        cell = replace(cell, tests=[test])
        statuses[label] = apply(cell, entries, TODAY).tests[0].status
    assert statuses == {"seen": Status.KNOWN, "other": Status.FAIL}
