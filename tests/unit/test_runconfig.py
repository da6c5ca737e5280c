"""The run configuration: what `vhba-lab run` writes is what every worker reads, or an error."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lab.run.config import SCHEMA_VERSION, RunConfig, RunConfigError
from lab.run.runner import run_config

FULL = RunConfig(
    cells=("6.12-ours-ours", "7.3-upstream-ours"), accel="tcg", mirror="http://m.invalid/debian",
    security_mirror="http://s.invalid/debian-security", refresh=True, quick=True,
    keyword="spc or mmc", responder_faults=("capacity:blocks=1000", "tur:ready=0"),
    module_fault="uaf", boot_fault="panic-once", kmemleak_scans="test",
)  # fmt: skip


def test_every_field_survives_the_file(tmp_path: Path) -> None:
    path = FULL.write(tmp_path)
    assert path.name == "config.json"
    assert RunConfig.read(path) == FULL
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    minimal = RunConfig(cells=("6.12-ours-ours",))
    assert RunConfig.read(minimal.write(tmp_path)) == minimal


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"schema_version": 0}, "schema_version 0"),
        ({"colour": "red"}, "unknown field(s) colour"),
        ({"quick": "yes"}, "'quick' must be true or false"),
        ({"responder_faults": "capacity:blocks=1"}, "'responder_faults' must be a list"),
        ({"boot_fault": 3}, "'boot_fault' must be a string"),
        ({"cells": ["6.12-theirs-ours"]}, "unknown module 'theirs'"),
        ({"kmemleak_scans": "daily"}, "'kmemleak_scans' is 'daily', not one of group, test"),
    ],
)
def test_a_mismatched_file_is_one_line_naming_the_field(change: dict, named: str) -> None:
    data = {**FULL.to_json(), **change}
    with pytest.raises(RunConfigError) as caught:
        RunConfig.from_json(data, "config.json")
    message = str(caught.value)
    assert named in message and "vhba-lab run" in message and "\n" not in message


def test_no_cells_and_unreadable_files_are_errors_too(tmp_path: Path) -> None:
    data = FULL.to_json()
    del data["cells"]
    with pytest.raises(RunConfigError, match="no 'cells'"):
        RunConfig.from_json(data)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RunConfigError, match="cannot read the run configuration"):
        RunConfig.read(tmp_path / "config.json")


def test_the_parent_resolves_the_accelerator_and_mirrors_once() -> None:
    ctx = SimpleNamespace(
        accel=SimpleNamespace(name="tcg"), mirror_override="http://m.invalid/debian",
        security_override="http://s.invalid/debian-security",
    )  # fmt: skip
    from lab.cell.spec import CellSpec

    config = run_config(
        ctx, [CellSpec.parse("6.12-ours-ours")], keyword="spc", quick=True,  # type: ignore[arg-type]
        faults=["capacity:blocks=1000"], boot_fault="panic",
    )  # fmt: skip
    assert config.accel == "tcg" and config.security_mirror == "http://s.invalid/debian-security"
    assert config.responder_faults == ("capacity:blocks=1000",) and config.boot_fault == "panic"
    assert config.refresh is False, "workers must not download the indices again"
