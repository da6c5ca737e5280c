"""A guest lost mid-cell, through the real conformance harness: one verdict, the rest skipped.

A throw-away suite runs under ``conformance/conftest.py`` with a faked guest
whose QEMU "dies" during the second test; the gate, the record in
tests.jsonl, the runner's cell verdict and the exit code are the real code.
(The same thing with a real QEMU killed from the host is an integration test:
tests/integration/test_matrix_cell.py.)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lab.cell.spec import CellSpec
from lab.report.results import Run, Status
from lab.run.config import RunConfig
from lab.run.runner import _cell_result
from tests.unit.throwaway_suite import CELL, run_suite
from tests.unit.throwaway_suite import rows as suite_rows

TCG = RunConfig(cells=(), accel="tcg")

SUITE = """
from pathlib import Path
from types import SimpleNamespace

import pytest

from lab.cell.env import CellEnv
from lab.cell.state import CellState
from tests.unit.kmsg_guest import KmsgGuest

SERIAL_AFTER_READY = {serial!r}


class FakeMachine:
    def __init__(self, serial: Path) -> None:
        self.running = True
        self.spec = SimpleNamespace(serial_log=serial)

    def is_running(self) -> bool:
        return self.running

    def exit_code(self):
        return None if self.running else -9

    def die(self) -> None:
        self.running = False
        with self.spec.serial_log.open("a") as fh:
            fh.write(SERIAL_AFTER_READY)


@pytest.fixture(scope="session")
def cell(request, run_dir):
    cell_dir = run_dir / "cells" / request.param.cell_id
    ctx = SimpleNamespace(accel=SimpleNamespace(name="tcg"))
    env = CellEnv(ctx, request.param, cell_dir, {{}})
    cell_dir.mkdir(parents=True)
    serial = cell_dir / "serial-live.log"
    serial.write_text("[    1.000000] Linux version 6.12 (boot, before the cell was ready)\\n"
                      "[    1.100000] Oops: int3 (an early-boot oops that did not matter)\\n")
    machine = FakeMachine(serial)
    env.booted = SimpleNamespace(guest=KmsgGuest(alive=machine.is_running), machine=machine,
                                 retried=(), ready_seconds=1.0)
    env._serial_mark = serial.stat().st_size
    env.state = CellState.READY
    env.module_loaded = True
    yield env
    env._write_cell_json("error" if env.loss else "done")


def test_1_before(cell):
    pass


def test_2_loses_the_guest(cell):
    cell.booted.machine.die()
    cell.guest.run(["sg_inq", "/dev/sg1"])


def test_3_after(cell):
    raise AssertionError("must not run in a broken cell")


def test_4_after(cell):
    raise AssertionError("must not run in a broken cell")
"""
PANIC = (
    "[  812.000000] BUG: unable to handle page fault for address: ffffc90000a3f000\n"
    "[  812.000300] Kernel panic - not syncing: Fatal exception\n"
)


def _cell(run_dir: Path) -> tuple[dict[str, dict], Status, Run]:
    rows = suite_rows(run_dir)
    cell_dir = run_dir / "cells" / CELL
    cell = _cell_result(CellSpec.parse(CELL), cell_dir, TCG)
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    run = Run("loss-1", now, now, {"hostname": "h"}, [cell])
    return rows, cell.overall, run


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QEMU dies with nothing on the serial console: infrastructure."""
    return run_suite(tmp_path_factory.mktemp("killed"), SUITE.format(serial=""))


def test_a_killed_qemu_is_one_error_and_the_rest_skip(killed: Path) -> None:
    rows, overall, run = _cell(killed)
    assert rows["demo/test_1_before"]["status"] == "pass"
    lost = rows["demo/test_2_loses_the_guest"]
    assert lost["status"] == "error"
    assert lost["message"].startswith("cell broken: QEMU-EXIT: QEMU exited (signal 9)")
    for name in ("demo/test_3_after", "demo/test_4_after"):
        assert rows[name]["status"] == "skip"
        assert "cell broken: QEMU-EXIT: QEMU exited (signal 9)" in rows[name]["message"]
    # The early-boot oops printed before the cell was ready is not this loss's cause.
    info = json.loads((killed / "cells" / CELL / "cell.json").read_text())
    assert info["cell_state"] == "broken"
    assert info["loss"]["kind"] == "qemu-exit" and info["loss"]["infrastructure"]
    assert overall is Status.ERROR
    assert run.exit_code == 2


def test_a_panic_with_the_module_in_is_a_module_verdict(tmp_path: Path) -> None:
    run_dir = run_suite(tmp_path, SUITE.format(serial=PANIC))
    rows, overall, run = _cell(run_dir)
    lost = rows["demo/test_2_loses_the_guest"]
    assert lost["status"] == "fail"
    assert lost["message"].startswith("cell broken: PANIC: [  812.000000] BUG: unable to handle")
    assert [rows[n]["status"] for n in ("demo/test_3_after", "demo/test_4_after")] == [
        "skip",
        "skip",
    ]
    assert overall is Status.FAIL
    assert run.exit_code == 1
