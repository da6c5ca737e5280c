"""--module-fault: the CLI offers exactly the deliberate bugs module/Makefile knows,
and a cell built with one says so in its reproducer."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from lab.build.module import MODULE_FAULTS
from lab.cell.spec import CellSpec
from lab.cli import build_parser
from lab.run.config import RunConfig
from lab.run.runner import reproducer

MAKEFILE = Path(__file__).resolve().parents[2] / "module" / "Makefile"


def _run_choices() -> tuple[str, ...]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices["run"]._actions if a.dest == "module_fault")
    return tuple(action.choices or ())


def test_cli_choices_are_the_module_faults() -> None:
    assert _run_choices() == MODULE_FAULTS
    args = build_parser().parse_args(["run", "--cell", "6.12-ours-ours", "--module-fault", "uaf"])
    assert args.module_fault == "uaf"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--module-fault", "nonsense"])
    for fault in MODULE_FAULTS:
        assert re.search(rf"ifeq \(\$\(INJECT\),{fault}\)", MAKEFILE.read_text()), fault


def test_reproducer_names_the_module_fault() -> None:
    spec = CellSpec("6.12")
    assert reproducer(spec, config=RunConfig(cells=(), module_fault="uaf")) == (
        "vhba-lab run --cell 6.12-ours-ours --module-fault uaf"
    )
    assert "--module-fault" not in reproducer(spec)
