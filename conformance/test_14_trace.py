"""The responder's CDB trace: well-formed, complete, and what a mount sends.

The trace is the lab's record of the driver-device contract per kernel; the
mount sequence is compared with a golden file per kernel series so a kernel
that starts sending something new (or stops) is noticed.  The rest of the
suite runs the drive as users do, untraced (plain reads then never reach the
responder: docs/direct-reads.md); this group restarts it traced, so the trace
starts with the kernel attaching the device, and untraced again after.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from scsi_helpers import restart_drive

from lab.build.debug_kernel import debug_series
from lab.cell.drives import LOGS, DriveNode
from lab.cell.env import CellEnv
from lab.vm.guest import command_text

TRACE = f"{LOGS}/trace.jsonl"
GOLDEN = Path(__file__).resolve().parent / "golden"
POLLING = {"GET EVENT STATUS NOTIFICATION", "TEST UNIT READY"}
REQUIRED = {
    "INQUIRY",
    "TEST UNIT READY",
    "READ CAPACITY(10)",
    "READ(10)",
    "GET EVENT STATUS NOTIFICATION",
}


@pytest.fixture(scope="module", autouse=True)
def _traced(cell: CellEnv) -> Iterator[None]:
    if cell.spec.responder != "ours":
        pytest.skip(f"the CDB trace is our responder's (cell uses {cell.spec.responder})")
    if cell.broken:
        pytest.skip(f"cell broken: {cell.broken}")
    cell.guest.run(["rm", "-f", TRACE])
    restart_drive(cell, trace=True)
    try:
        yield
    finally:
        restart_drive(cell)


def _records(cell: CellEnv, since: float = 0.0, until: float = float("inf")) -> list[dict]:
    text = cell.guest.run(["cat", TRACE], timeout=120).stdout
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # the responder is mid-write: the last line is not complete yet
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"{TRACE}:{number} is not JSON ({exc}): {line[:200]}") from exc
        if since <= record.get("t", 0) <= until:
            records.append(record)
    return records


def test_trace_lines_are_well_formed(cell: CellEnv, drive: DriveNode) -> None:
    from vhba_responder.trace import TRACE_KEYS

    records = _records(cell)
    assert records, "empty trace"
    problems = []
    for i, r in enumerate(records):
        if tuple(r) != TRACE_KEYS:
            problems.append(f"record {i}: keys {list(r)}")
        elif not (
            isinstance(r["t"], float)
            and isinstance(r["op"], str)
            and isinstance(r["cdb"], str)
            and bytes.fromhex(r["cdb"])
            and isinstance(r["len"], int)
            and r["status"] in (0, 2, None)
            and (r["sense"] is None or len(r["sense"].split("/")) == 3)
            and (r["status"] != 2 or r["sense"] is not None)
            and isinstance(r["bytes"], int)
            and isinstance(r["us"], int)
        ):
            problems.append(f"record {i}: bad values {r}")
    assert not problems, "\n".join(problems[:10])


def test_trace_has_the_attach_and_poll_commands(cell: CellEnv, drive: DriveNode) -> None:
    ops = {r["op"] for r in _records(cell)}
    assert ops >= REQUIRED, f"missing {sorted(REQUIRED - ops)}; seen {sorted(ops)}"


def _now(cell: CellEnv) -> float:
    return float(cell.guest.run(["date", "+%s.%N"]).stdout)


def _first_order(ops: list[str]) -> list[str]:
    seen: list[str] = []
    for op in ops:
        if op not in POLLING and op not in seen:
            seen.append(op)
    return seen


def test_mount_sequence_matches_golden(cell: CellEnv, drive: DriveNode) -> None:
    """Record mount+umount's commands; compare with golden/trace-mount-<series>.json
    (a debug kernel's series: 6.12-debug is compared with 6.12's)."""
    g = cell.guest
    # Settle first: a pending revalidation would add READ CAPACITY and friends.
    getsize = command_text(["blockdev", "--getsize64", drive.sr])
    g.settle()
    g.sh(f"{getsize}; sleep 1", timeout=60, check=False)
    mnt = "/mnt/conf-trace"
    start = _now(cell)
    g.sh(
        f"{command_text(['mkdir', '-p', mnt])}"
        f" && {command_text(['mount', '-t', 'iso9660', '-o', 'ro', drive.sr, mnt])}"
        f" && {command_text(['ls', '-R', mnt])} >/dev/null"
        f" && {command_text(['cat', f'{mnt}/small.txt'])} >/dev/null"
        f"; {command_text(['umount', mnt])}"
    )
    end = _now(cell)
    records = [r for r in _records(cell, start, end) if r["dev"] == 0]
    ops = [r["op"] for r in records]
    result = {
        "kernel": cell.kernel.abi if cell.kernel else cell.spec.kernel,
        "series": cell.spec.kernel,
        "ops": ops,
        "set": sorted(set(ops) - POLLING),
        "first_order": _first_order(ops),
    }
    (cell.cell_dir / "trace-mount.json").write_text(json.dumps(result, indent=2) + "\n")
    assert "READ(10)" in ops, f"mount read nothing through the drive: {ops}"
    # a debug kernel is its series' source rebuilt with sanitizers: the same commands
    series = debug_series(cell.spec.kernel) or cell.spec.kernel
    golden_path = GOLDEN / f"trace-mount-{series}.json"
    if not golden_path.exists():
        pytest.skip(f"no {golden_path.name}; recorded {cell.cell_dir / 'trace-mount.json'}")
    golden = json.loads(golden_path.read_text())
    problems = []
    if result["set"] != golden["set"]:
        extra = sorted(set(result["set"]) - set(golden["set"]))
        missing = sorted(set(golden["set"]) - set(result["set"]))
        problems.append(f"commands: new {extra}, no longer sent {missing}")
    if result["first_order"] != golden["first_order"]:
        problems.append(f"order {result['first_order']} != golden {golden['first_order']}")
    assert not problems, f"mount trace differs from {golden_path.name}: " + "; ".join(problems)
