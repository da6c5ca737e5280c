"""The lab benchmark's "why" notes: only for phases over target, naming where time went."""

from __future__ import annotations

from bench.lab import TARGETS, why_notes


def test_no_notes_within_targets() -> None:
    report = {"boot": {"warm_ready_s": 3.2}, "cell": {"wall_s": 25.0}}
    assert why_notes(report) == []


def test_notes_explain_slow_phases() -> None:
    report = {
        "boot": {"warm_ready_s": 7.5, "warm_overlay_copy_s": 0.5, "warm_overlay_bytes": 3e8},
        "cell": {
            "wall_s": 95.0, "tests_total_s": 60.0, "tests": 40, "guest_ready_s": 4.1,
            "module_build_s": 3.0, "outside_cell_s": 12.0,
            "slowest_tests": [{"name": "block/test_big_read", "s": 20.0, "status": "pass"}],
        },
    }  # fmt: skip
    notes = {n["phase"]: n for n in why_notes(report)}
    assert notes["warm_ready_s"]["target"] == TARGETS["warm_ready_s"]
    assert "300 MB warm overlay takes 0.50 s" in notes["warm_ready_s"]["why"]
    why = notes["warm_cell_s"]["why"]
    assert "tests 60.0 s over 40 tests" in why
    assert "block/test_big_read 20.0 s" in why
    assert "module build 3.0 s" in why


def test_missing_phases_are_ignored() -> None:
    assert why_notes({}) == []
