"""vhba-lab's argument parsing: usage errors exit 3 (the README's code), -n N|auto."""

from __future__ import annotations

import pytest

from lab.cli import build_parser, main


@pytest.mark.parametrize("argv", [["run", "-n", "0"], ["run", "--bogus"], ["no-such-command"]])
def test_usage_errors_exit_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 3
    assert "vhba-lab" in capsys.readouterr().err


def test_workers_auto_by_default_or_a_count() -> None:
    parser = build_parser()
    assert parser.parse_args(["run"]).workers is None
    assert parser.parse_args(["run", "-n", "auto"]).workers is None
    assert parser.parse_args(["run", "-n", "2"]).workers == 2


def test_kmemleak_scans_offers_the_healths_scopes() -> None:
    from lab.cell.health import LEAK_SCAN_SCOPES

    parser = build_parser()
    assert parser.parse_args(["run"]).kmemleak_scans == LEAK_SCAN_SCOPES[0]
    for scope in LEAK_SCAN_SCOPES:
        assert parser.parse_args(["run", "--kmemleak-scans", scope]).kmemleak_scans == scope
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--kmemleak-scans", "daily"])
