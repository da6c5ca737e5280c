"""JUnit XML for CI systems: one ``<testsuite>`` per cell.

CI dashboards only know passed / failure / error / skipped, so the mapping is:
SANITIZER -> ``<failure type="KASAN" message="BUG: KASAN: ...">`` with the
report texts as content (the kind in ``type`` is what a dashboard groups by,
the report is what a developer needs, without opening the run directory),
FAIL -> ``<failure>``, ERROR -> ``<error>`` (the harness broke, kept apart
from module bugs), KNOWN -> ``<skipped message="known failure: reason">``,
SKIP -> ``<skipped>``.  A cell whose own status is not PASS (boot timeout,
build failure) gets a synthetic ``cell-setup`` testcase, so a cell that never
ran a test still shows up red in CI instead of vanishing.

Measurements a test recorded (``record_property``) become the testcase's
``<properties>``, first inside ``<testcase>`` as pytest's own junit writer
puts them, so CI tools that read testcase properties show a passing test's
numbers too, not only a failure's.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from lab.report.results import BAD, Cell, Run, Status, TestResult, artifact_file

SETUP_CASE = "cell-setup"
#: Per report in a ``<failure>``: a runaway report must not make junit.xml huge.
MAX_REPORT_CHARS = 64 * 1024
# Characters XML 1.0 cannot carry at all; a kernel log can hold them (ANSI escapes).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def to_element(run: Run, run_dir: Path | None = None) -> ET.Element:
    """The document; sanitizer report texts are read from ``run_dir`` when given."""
    root = ET.Element("testsuites", name=f"vhba-lab {run.run_id}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for cell in run.sorted_cells():
        suite = _suite(cell, run, run_dir)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        total_time += cell.duration_s
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    return root


def _suite(cell: Cell, run: Run, run_dir: Path | None) -> ET.Element:
    suite = ET.Element(
        "testsuite",
        name=cell.cell_id,
        timestamp=run.started.isoformat(),
        hostname=run.host.get("hostname", ""),
        time=f"{cell.duration_s:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("kernel.series", cell.kernel.get("series", "")),
        ("kernel.abi", cell.kernel.get("abi", "")),
        ("kernel.version", cell.kernel.get("version", "")),
        ("kernel.release", cell.kernel.get("release", "")),
        ("accel", cell.accel),
        ("module", cell.module),
        ("responder", cell.responder),
        ("reproducer", cell.reproducer),
    ):
        ET.SubElement(props, "property", name=name, value=value)

    cases = []
    if cell.status is not Status.PASS:
        setup = TestResult(
            name=SETUP_CASE,
            group="setup",
            status=cell.status,
            duration_s=0.0,
            message=cell.message or f"cell {cell.status.value} before its tests",
        )
        cases.append(setup)
    cases.extend(cell.tests)

    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for test in cases:
        suite.append(_case(cell, test, run_dir))
        counts["tests"] += 1
        if test.status in BAD:
            counts["failures"] += 1
        elif test.status is Status.ERROR:
            counts["errors"] += 1
        elif test.status in (Status.KNOWN, Status.SKIP):
            counts["skipped"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    return suite


def _case(cell: Cell, test: TestResult, run_dir: Path | None) -> ET.Element:
    case = ET.Element(
        "testcase", classname=cell.cell_id, name=test.name, time=f"{test.duration_s:.3f}"
    )
    if test.measurements:
        props = ET.SubElement(case, "properties")
        for name, value in test.measurements.items():
            ET.SubElement(
                props, "property", name=_NOT_XML.sub("?", name), value=_NOT_XML.sub("?", str(value))
            )
    message = test.message or ""
    first_line = message.splitlines()[0] if message else ""
    if test.status is Status.SANITIZER:
        findings = test.findings
        kinds = "+".join(k.label for k in test.kinds) or "sanitizer"
        summary = findings[0].headline if findings else first_line or "kernel sanitizer report"
        if len(findings) > 1:
            summary += f" (+{len(findings) - 1} more)"
        failure = ET.SubElement(case, "failure", message=summary, type=kinds)
        failure.text = _sanitizer_details(cell, test, run_dir)
    elif test.status is Status.FAIL:
        failure = ET.SubElement(case, "failure", message=first_line or "failed", type="fail")
        failure.text = _details(cell, test)
    elif test.status is Status.ERROR:
        error = ET.SubElement(
            case, "error", message=first_line or "harness error", type="harness-error"
        )
        error.text = _details(cell, test)
    elif test.status is Status.KNOWN:
        reason = (test.known_failure or {}).get("reason", "listed in known-failures.toml")
        ET.SubElement(case, "skipped", message=f"known failure: {reason}")
    elif test.status is Status.SKIP:
        ET.SubElement(case, "skipped", message=first_line or "skipped")
    if test.artifacts:
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(f"{k}: {v}" for k, v in sorted(test.artifacts.items()))
    return case


def _details(cell: Cell, test: TestResult) -> str:
    lines = [test.message or ""]
    if cell.reproducer:
        lines.append(f"reproduce: {cell.reproducer}")
    return "\n".join(line for line in lines if line)


def _sanitizer_details(cell: Cell, test: TestResult, run_dir: Path | None) -> str:
    parts = [_details(cell, test)]
    for finding in test.findings:
        path = artifact_file(run_dir, finding.artifact) if run_dir is not None else None
        if path is None:
            parts.append(f"{finding.label} report: {finding.artifact} (not available)")
            continue
        text = _NOT_XML.sub("?", path.read_text(encoding="utf-8", errors="replace"))
        if len(text) > MAX_REPORT_CHARS:
            text = text[:MAX_REPORT_CHARS] + f"\n... (cut; the whole report is {finding.artifact})"
        parts.append(f"{finding.label} report ({finding.artifact}):\n{text.rstrip()}")
    return "\n\n".join(p for p in parts if p)


def write_junit(run: Run, path: Path, run_dir: Path | None = None) -> Path:
    """Write junit.xml; report texts come from ``run_dir`` (default: the file's directory)."""
    tree = ET.ElementTree(to_element(run, run_dir if run_dir is not None else path.parent))
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return path
