"""A run's media are built once and then reused: cells on other workers must see
the very bytes the first cell uploaded (a rebuild changes the volume dates)."""

from __future__ import annotations

from pathlib import Path

from lab.build.media import Medium
from lab.cell.env import media_set


def test_second_call_reuses_the_images(tmp_path: Path) -> None:
    first = media_set(tmp_path)
    before = {name: (m.path.stat().st_mtime_ns, m.sha256) for name, m in first.items()}
    second = media_set(tmp_path)
    assert {name: (m.path.stat().st_mtime_ns, m.sha256) for name, m in second.items()} == before
    assert second["cd1"].files == first["cd1"].files and second["cd1"].label == "VHBALAB_CD1"


def test_an_image_without_its_manifest_is_rebuilt(tmp_path: Path) -> None:
    cd1 = media_set(tmp_path)["cd1"]
    cd1.path.with_suffix(".json").unlink()
    assert Medium.load(cd1.path) is None
    again = media_set(tmp_path)["cd1"]
    assert again.files == cd1.files  # same seed, same file contents
    assert not list(tmp_path.glob("media/*.partial"))
