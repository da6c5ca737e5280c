"""--module PATH: any Kbuild tree or tarball becomes a named module kind with its provenance."""

from __future__ import annotations

import subprocess
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lab.build.module_source import default_name, module_source
from lab.cell.spec import CellSpec
from lab.errors import UsageError
from lab.report.html import render
from lab.report.results import Cell, Run, Status, TestResult
from lab.run.config import RunConfig
from lab.run.runner import reproducer


def _tree(root: Path, name: str = "vhba-module-20260313") -> Path:
    tree = root / name
    tree.mkdir(parents=True)
    (tree / "Makefile").write_text("obj-m := vhba.o\n")
    (tree / "vhba.c").write_text("/* a module */\n")
    return tree


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("vhba-module-20260313", "vhbamodule"),
        ("vhba-module-20260313.tar.xz", "vhbamodule"),
        ("vhba-20250329", "vhba"),
        ("My_Fork", "myfork"),
        ("upstream", "upstreamtree"),
        ("2026", "module"),
    ],
)
def test_names_come_from_the_directory_without_versions(given: str, name: str) -> None:
    assert default_name(Path(given)) == name
    CellSpec("6.12", name)  # always a valid cell-id part


def test_a_git_tree_records_its_commit_and_describe(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    subprocess.run([*git, "tag", "vhba-module-20260313"], check=True)
    source = module_source(str(tree))
    info = source.provenance()
    assert source.name == "vhbamodule" and info["path"] == str(tree)
    assert len(info["git_commit"]) == 40 and info["git_describe"] == "vhba-module-20260313"
    assert "tarball_sha256" not in info


def test_a_tarball_is_unpacked_once_and_hashed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VHBA_LAB_CACHE", str(tmp_path / "cache"))
    tree = _tree(tmp_path / "src")
    tarball = tmp_path / "vhba-module-20260313.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    source = module_source(str(tarball), "fork")
    assert source.name == "fork" and (source.path / "Makefile").is_file()
    assert module_source(str(tarball), "fork").path == source.path, "unpacked once"
    assert len(source.provenance()["tarball_sha256"]) == 64


@pytest.mark.parametrize(
    ("make", "name", "message"),
    [
        (lambda p: p / "missing", None, "no such file or directory"),
        (lambda p: (p / "empty").mkdir() or p / "empty", None, "has no Kbuild or Makefile"),
        (lambda p: (p / "x.zip").write_text("") or p / "x.zip", None, "not a directory or a .tar"),
        (lambda p: _tree(p), "Bad-Name", "bad module name 'Bad-Name'"),
        (lambda p: _tree(p), "ours", "bad module name 'ours'"),
        (lambda p: _tree(p), "debug", "bad module name 'debug'"),
    ],
)
def test_unusable_input_is_one_line_with_the_fix(tmp_path: Path, make, name, message) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        module_source(str(make(tmp_path)), name)
    assert "\n" not in str(caught.value)


def test_cells_of_the_tree_need_it_in_the_run_config() -> None:
    config = RunConfig(cells=("6.12-vhbamodule-ours",), module_path="/src/vhba-module",
                       module_name="vhbamodule")  # fmt: skip
    (spec,) = config.specs()
    assert reproducer(spec, config=config) == (
        "vhba-lab run --cell 6.12-vhbamodule-ours --module /src/vhba-module "
        "--module-name vhbamodule"
    )
    with pytest.raises(UsageError, match="pass the module's tree with --module PATH"):
        RunConfig(cells=("6.12-vhbamodule-ours",)).specs()


def test_the_report_shows_where_the_module_came_from(tmp_path: Path) -> None:
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    kernel = {"series": "6.12", "abi": "6.12.118+deb13-amd64", "release": "trixie",
              "version": "6.12.118-1"}  # fmt: skip
    info = {"kind": "vhbamodule", "given": "/src/vhba-module", "git_describe": "v20260313-2-g1",
            "ko_sha256": "ab" * 32}  # fmt: skip
    cell = Cell(
        "6.12-vhbamodule-ours",
        kernel,
        "vhbamodule",
        "ours",
        "tcg",
        Status.PASS,
        tests=[TestResult("spc/test_a", "spc", Status.PASS)],
        module_provenance=info,
    )
    html = render(Run("r1", now, now, {"lab_commit": "c"}, [cell]), tmp_path)
    assert "v20260313-2-g1 · ko abababababab" in html
    assert "git_describe: v20260313-2-g1" in html


def test_known_as_names_a_module_the_lab_knows_and_reaches_every_record(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    source = module_source(str(tree), "vhbacopy", "upstream")
    assert source.provenance()["known_as"] == "upstream"
    with pytest.raises(UsageError, match="--module-known-as nosuch: choose one of"):
        module_source(str(tree), "vhbacopy", "nosuch")
    config = RunConfig(cells=("6.12-vhbacopy-ours",), module_path=str(tree),
                       module_name="vhbacopy", module_known_as="upstream")  # fmt: skip
    assert RunConfig.from_json(config.to_json()) == config
    (spec,) = config.specs()
    assert reproducer(spec, config=config).endswith("--module-known-as upstream")
