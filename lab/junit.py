"""JUnit XML for CI systems: one ``<testsuite>`` per cell.

CI dashboards only know passed / failure / error / skipped, so the mapping is:
FAIL -> ``<failure>``, ERROR -> ``<error>`` (the harness broke, kept apart
from module bugs), KNOWN -> ``<skipped message="known failure: reason">``,
SKIP -> ``<skipped>``.  A cell whose own status is not PASS (boot timeout,
build failure) gets a synthetic ``cell-setup`` testcase, so a cell that never
ran a test still shows up red in CI instead of vanishing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from lab.results import Cell, Run, Status, TestResult

SETUP_CASE = "cell-setup"


def to_element(run: Run) -> ET.Element:
    root = ET.Element("testsuites", name=f"vhba-lab {run.run_id}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for cell in run.sorted_cells():
        suite = _suite(cell, run)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        total_time += cell.duration_s
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    return root


def _suite(cell: Cell, run: Run) -> ET.Element:
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
        suite.append(_case(cell, test))
        counts["tests"] += 1
        if test.status is Status.FAIL:
            counts["failures"] += 1
        elif test.status is Status.ERROR:
            counts["errors"] += 1
        elif test.status in (Status.KNOWN, Status.SKIP):
            counts["skipped"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    return suite


def _case(cell: Cell, test: TestResult) -> ET.Element:
    case = ET.Element(
        "testcase", classname=cell.cell_id, name=test.name, time=f"{test.duration_s:.3f}"
    )
    message = test.message or ""
    first_line = message.splitlines()[0] if message else ""
    if test.status is Status.FAIL:
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


def write_junit(run: Run, path: Path) -> Path:
    tree = ET.ElementTree(to_element(run))
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return path
