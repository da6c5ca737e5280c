"""The cell recorder: cell.json holds the stack's fields, its timings and its files."""

from __future__ import annotations

import json
from pathlib import Path

from lab.cell.record import CELL_FILE, CellRecorder


def test_cell_json_lists_timings_and_existing_artifacts_only(tmp_path: Path) -> None:
    record = CellRecorder(tmp_path, "cdemu")
    for name in ("build.log", "cdemu-daemon.log", "serial-attempt1.log"):
        (tmp_path / name).write_text("x")
    with record.phase("module_build"):
        pass
    with record.phase("module_build"):
        pass
    record.write({"cell_id": "6.12-ours-cdemu", "state": "done"})
    doc = json.loads((tmp_path / CELL_FILE).read_text())
    assert doc["cell_id"] == "6.12-ours-cdemu" and doc["state"] == "done"
    assert set(doc["phases_s"]) == {"module_build"} and doc["duration_s"] >= 0
    assert doc["artifacts"] == {
        "build_log": "build.log",
        "responder_log": "cdemu-daemon.log",
        "serial_attempt1": "serial-attempt1.log",
    }


def test_serial_logs_of_every_boot_are_kept(tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    (guest / "serial.log").write_text("booted")
    (guest / "serial-attempt1.log").write_text("Oops: int3")
    record = CellRecorder(tmp_path, "ours")
    record.keep_serial_logs(guest)
    assert (tmp_path / "serial.log").read_text() == "booted"
    assert record.artifacts() == {"serial": "serial.log", "serial_attempt1": "serial-attempt1.log"}
