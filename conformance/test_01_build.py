"""The module builds in the kernel's own userspace, without warnings, and loads."""

from __future__ import annotations

import pytest

from lab.cell.env import CellEnv


@pytest.mark.no_health
def test_module_builds(cell: CellEnv) -> None:
    assert cell.build is not None
    assert cell.build.ok, f"build failed, see {cell.build.log}"


@pytest.mark.no_health
def test_module_builds_without_warnings(cell: CellEnv) -> None:
    if cell.lineage != "ours":
        pytest.skip("only our module's warnings are ours to fix")
    assert cell.build is not None and cell.build.ok, "module did not build"
    assert cell.build.warnings == 0, f"{cell.build.warnings} compiler warnings: {cell.build.log}"


def test_module_loads(cell: CellEnv) -> None:
    if cell.build is None or not cell.build.ok:
        pytest.skip("module did not build")
    assert cell.broken is None or "did not load" not in cell.broken, cell.broken
    out = cell.guest.sh("grep -w ^vhba /proc/modules; stat -c %F /dev/vhba_ctl", check=False).stdout
    assert out.startswith("vhba "), out
    assert "character special file" in out


def test_modinfo_reports_a_version(cell: CellEnv) -> None:
    if cell.broken:
        pytest.skip(cell.broken)
    version = cell.guest.run(["cat", "/sys/module/vhba/version"]).stdout.strip()
    assert version, "module has no MODULE_VERSION"
