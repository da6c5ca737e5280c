"""What a cell leaves behind for a person to judge it: cell.json, timings, artifacts.

:class:`lab.cell.env.CellEnv` builds and tears down the stack; this recorder
only writes down what happened to it.  The runner reads ``cell.json`` back
(lab/run/runner.py) and the report links the artifacts listed in it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CELL_FILE = "cell.json"

#: Report label -> file name in the cell directory, when the file exists.
_ARTIFACTS = {
    "build_log": "build.log", "serial": "serial.log", "dmesg": "dmesg.txt",
    "responder_log": "responder.log", "cdb_trace": "trace.jsonl",
    # kmemleak kernels only: leaks from boot and set-up, and why scans stopped
    "kmemleak_baseline": "kmemleak-baseline.txt", "kmemleak_notes": "kmemleak-notes.txt",
}  # fmt: skip


@dataclass
class CellRecorder:
    """The cell directory's bookkeeping: seconds per phase, the artifact list, cell.json."""

    cell_dir: Path
    responder: str  # whose log is responder_log: ours or cdemu's
    started: float = field(default_factory=time.monotonic)
    # Seconds per bring-up / tear-down / per-test step, written to cell.json so a
    # slow cell says where its time went (bench.lab reports these).
    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent in the block to ``phases[name]``."""
        start = time.monotonic()
        try:
            yield
        finally:
            spent = time.monotonic() - start
            self.phases[name] = round(self.phases.get(name, 0.0) + spent, 2)

    def keep_serial_logs(self, guest_dir: Path) -> None:
        """Copy the guest's serial logs (the last boot and every retried one) into the cell."""
        serials = [guest_dir / "serial.log", *sorted(guest_dir.glob("serial-attempt*.log"))]
        for serial in serials:
            if serial.exists():
                shutil.copy2(serial, self.cell_dir / serial.name)

    def artifacts(self) -> dict[str, str]:
        """Label -> file name of what the cell directory holds."""
        names = dict(_ARTIFACTS)
        if self.responder == "cdemu":
            names["responder_log"] = "cdemu-daemon.log"
        for retry in sorted(self.cell_dir.glob("serial-attempt*.log")):  # failed boots (retried)
            names[retry.stem.replace("-", "_")] = retry.name
        return {label: name for label, name in names.items() if (self.cell_dir / name).exists()}

    def write(self, info: dict[str, Any]) -> None:
        """cell.json: ``info`` (what the stack says of itself) plus timings and artifacts."""
        doc = {
            **info,
            "duration_s": round(time.monotonic() - self.started, 1),
            "phases_s": self.phases,
            "artifacts": self.artifacts(),
        }
        (self.cell_dir / CELL_FILE).write_text(json.dumps(doc, indent=2) + "\n")
