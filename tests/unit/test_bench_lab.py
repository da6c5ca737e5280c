"""The lab benchmark's "why" notes: only for phases over target, naming where time went."""

from __future__ import annotations

from bench.lab import TARGETS, between_tests, per_test_overhead, why_notes


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


def test_per_test_overhead_is_the_cell_time_outside_tests_and_one_time_phases() -> None:
    phases = {"guest_ready": 3.0, "module_build": 2.0, "teardown": 5.0, "health_checks": 4.0}
    # 100 s of cell, 10 s paid once, 60 s in the tests' own calls: 30 s over 30 tests
    assert per_test_overhead(100.0, phases, 60.0, 30) == 1.0
    assert per_test_overhead(None, phases, 60.0, 30) is None
    assert per_test_overhead(100.0, phases, 60.0, 0) is None


def test_gaps_name_the_test_whose_setup_took_the_time() -> None:
    tests = [
        {"name": "a", "duration_s": 1.0, "finished": 101.0},
        {"name": "c", "duration_s": 0.5, "finished": 112.0},  # 8 s after b, before its call
        {"name": "b", "duration_s": 2.0, "finished": 103.5},  # 0.5 s
    ]
    assert between_tests(tests, 2) == [("c", 8.0), ("b", 0.5)]


def test_overhead_over_target_gets_a_note_naming_the_gaps() -> None:
    report = {"cell": {"per_test_overhead_s": 0.9, "tests": 50,
                       "largest_gaps": [{"before": "cd_audio/test_toc", "s": 16.4}]}}  # fmt: skip
    (note,) = why_notes(report)
    assert note["phase"] == "per_test_overhead_s"
    assert note["target"] == TARGETS["per_test_overhead_s"] == 0.3
    assert "cd_audio/test_toc 16.4 s" in note["why"]
