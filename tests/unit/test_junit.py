"""junit.xml parses with junitparser and maps statuses the way CI expects."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped

from lab.report.junit import SETUP_CASE, write_junit

_spec = importlib.util.spec_from_file_location(
    "_report_samples", Path(__file__).with_name("test_results.py")
)
assert _spec and _spec.loader
samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(samples)


def _suites(tmp_path: Path) -> dict:
    run = samples.build_sample_run(tmp_path)
    path = write_junit(run, tmp_path / "junit.xml")
    xml = JUnitXml.fromfile(str(path))
    return {suite.name: suite for suite in xml}


def test_one_suite_per_cell_with_counts(tmp_path: Path) -> None:
    suites = _suites(tmp_path)
    assert list(suites) == [
        "3.16-ours-ours",
        "4.19-ours-ours",
        "5.10-upstream-cdemu",
        "6.9-ours-ours",
        "6.12-ours-ours",
    ]
    s612 = suites["6.12-ours-ours"]
    assert (s612.tests, s612.failures, s612.errors, s612.skipped) == (5, 1, 1, 1)
    s510 = suites["5.10-upstream-cdemu"]
    assert (s510.tests, s510.failures, s510.errors, s510.skipped) == (4, 1, 0, 1)
    s419 = suites["4.19-ours-ours"]
    assert (s419.tests, s419.failures, s419.errors, s419.skipped) == (5, 0, 0, 0)


def test_cell_that_never_ran_is_an_error_case(tmp_path: Path) -> None:
    suite = _suites(tmp_path)["3.16-ours-ours"]
    cases = list(suite)
    assert [c.name for c in cases] == [SETUP_CASE]
    assert suite.errors == 1
    (result,) = cases[0].result
    assert isinstance(result, Error)
    assert "BootTimeoutError" in (result.message or "")


def test_case_elements_and_properties(tmp_path: Path) -> None:
    suite = _suites(tmp_path)["6.12-ours-ours"]
    by_name = {c.name: c for c in suite}
    assert all(c.classname == "6.12-ours-ours" for c in suite)
    assert isinstance(by_name["spc/test_test_unit_ready"].result[0], Failure)
    assert isinstance(by_name["mmc/test_get_configuration"].result[0], Error)
    known = by_name["media/test_tray_lock"].result[0]
    assert isinstance(known, Skipped)
    assert known.message == "known failure: sr driver quirk"
    assert by_name["spc/test_inquiry_standard"].is_passed
    failure = by_name["spc/test_test_unit_ready"].result[0]
    assert "reproduce: vhba-lab run --kernel 6.12" in (failure.text or "")

    props = {p.name: p.value for p in suite.properties()}
    assert props["kernel.abi"] == "6.12.57+deb13-amd64"
    assert props["accel"] == "tcg"
    assert props["module"] == "ours"
    assert props["responder"] == "ours"


def test_totals_on_testsuites(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    xml = JUnitXml.fromfile(str(write_junit(run, tmp_path / "junit.xml")))
    xml.update_statistics()
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (20, 2, 2, 2)


def test_sanitizer_is_a_failure_typed_by_its_kind_with_the_report(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    samples.add_sanitizer(run, tmp_path)
    xml = JUnitXml.fromfile(str(write_junit(run, tmp_path / "junit.xml")))
    suite = {s.name: s for s in xml}["6.9-ours-ours"]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (5, 1, 0, 0)
    case = {c.name: c for c in suite}["mmc/test_get_configuration"]
    (failure,) = case.result
    assert isinstance(failure, Failure)
    assert failure.type == "KASAN"
    assert failure.message == samples.KASAN_TITLE
    text = failure.text or ""
    assert "KASAN report (6.9-ours-ours/mmc/test_get_configuration/sanitizer-1.txt):" in text
    assert "Read of size 8 at addr ffff88800a1b2c40" in text
    assert "reproduce: vhba-lab run --kernel 6.9" in text


def test_several_kinds_and_a_missing_report(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    test = samples.add_sanitizer(run, tmp_path, kinds=(samples.Kind.KASAN, samples.Kind.LOCKDEP))
    (tmp_path / test.findings[1].artifact).unlink()
    xml = JUnitXml.fromfile(str(write_junit(run, tmp_path / "junit.xml")))
    case = {c.name: c for c in {s.name: s for s in xml}["6.9-ours-ours"]}[test.name]
    (failure,) = case.result
    assert failure.type == "KASAN+LOCKDEP"
    assert failure.message == f"{samples.KASAN_TITLE} (+1 more)"
    assert f"LOCKDEP report: {test.findings[1].artifact} (not available)" in (failure.text or "")


def _case_element(path: Path, name: str, suite: str) -> ET.Element:
    root = ET.parse(path).getroot()
    found = root.find(f"testsuite[@name='{suite}']/testcase[@name='{name}']")
    assert found is not None, (suite, name)
    return found


def test_measurements_are_testcase_properties_even_on_a_pass(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    test = samples.add_measurements(run)
    samples.add_measurements(
        run, "6.12-ours-ours", "spc/test_test_unit_ready", {"note": "bad\x1b[0m tray"}
    )
    path = write_junit(run, tmp_path / "junit.xml")
    case = _case_element(path, test.name, "4.19-ours-ours")
    assert case[0].tag == "properties"  # first, where pytest's own writer puts them
    props = [(p.get("name"), p.get("value")) for p in case.findall("properties/property")]
    assert props == [("other_drive_read_s", "0.8"), ("seed", "123456789")]
    failed = _case_element(path, "spc/test_test_unit_ready", "6.12-ours-ours")
    assert [p.get("value") for p in failed.iter("property")] == ["bad?[0m tray"]
    assert failed.find("failure") is not None
    # junitparser still reads the results next to the properties
    xml = JUnitXml.fromfile(str(path))
    cases = {c.name: c for c in {s.name: s for s in xml}["4.19-ours-ours"]}
    assert cases[test.name].is_passed


def test_no_properties_element_without_measurements(tmp_path: Path) -> None:
    run = samples.build_sample_run(tmp_path)
    path = write_junit(run, tmp_path / "junit.xml")
    case = _case_element(path, "spc/test_inquiry_standard", "4.19-ours-ours")
    assert case.find("properties") is None
