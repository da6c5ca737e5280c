"""kmemleak scans once a group, through the real conformance harness.

A sanitizer kernel under TCG takes ~50 s a test for kmemleak's two scans, so
the harness scans after each group's last test, and only there: the test
before a group boundary is told by pytest's next item.  A throw-away suite of
two groups runs under ``conformance/conftest.py`` against a faked guest whose
every scan reads back one leak; no guest is booted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.throwaway_suite import rows, run_suite

SAMPLES = Path(__file__).parent / "fixtures" / "sanitizers"

FIXTURE = """
from pathlib import Path
from types import SimpleNamespace

import pytest

from lab.cell.env import CellEnv
from tests.unit.kmsg_guest import KmsgGuest

GUEST = KmsgGuest(leaks=Path({leaks!r}).read_text())


@pytest.fixture(scope="session")
def cell(request, run_dir):
    env = CellEnv(SimpleNamespace(), request.param, run_dir / "cells" / request.param.cell_id, {{}})
    env.booted = SimpleNamespace(guest=GUEST, machine=SimpleNamespace(is_running=lambda: True))
    return env


def test_scans_counted(cell):
    assert GUEST.scans == 0, "no scan before this group's last test"
"""
GROUP_1 = """

def test_a(cell):
    pass


def test_b(cell):
    pass
"""
GROUP_2 = """
from test_01_demo import GUEST, cell  # noqa: F401  (the faked cell, not the conftest's)


def test_c(cell):
    assert GUEST.scans == 1, "the first group's scan, once"
"""


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    source = FIXTURE.format(leaks=str(SAMPLES / "kmemleak-readback.txt")) + GROUP_1
    run_dir = run_suite(tmp_path_factory.mktemp("kmemleak"), source, {"test_02_other.py": GROUP_2})
    return rows(run_dir)


def test_only_a_groups_last_test_carries_its_leaks(records: dict[str, dict]) -> None:
    assert records["demo/test_scans_counted"]["status"] == "pass"
    assert records["demo/test_a"]["status"] == "pass"
    assert records["demo/test_b"]["status"] == "sanitizer"
    assert records["other/test_c"]["status"] == "sanitizer"


def test_a_group_scan_names_the_tests_it_covers(records: dict[str, dict]) -> None:
    message = records["demo/test_b"]["message"]
    assert message.startswith(
        "kmemleak's scan after this test covers the 3 tests since its last one "
        "(demo/test_scans_counted .. demo/test_b; all in kmemleak.txt)"
    ), message
    assert "kmemleak: unreferenced object 0xffff888005d3c600 (size 192)" in message
    # a scan that covers one test needs no word on where its leak came from
    assert records["other/test_c"]["message"].startswith("kmemleak: unreferenced object")
