"""Image cache verification: a corrupt entry is detected (and so rebuilt), a good one passes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lab.build.images import BOOT_FILES, ImageStore, recipe_packages
from lab.errors import CacheCorruptError


def _entry(root: Path, abi: str = "6.12.1+deb13-amd64") -> Path:
    path = root / "images" / f"trixie-{abi}-0123456789ab"
    (path / "tree" / "usr" / "src" / f"linux-headers-{abi}").mkdir(parents=True)
    files = {}
    for name in BOOT_FILES:
        data = f"contents of {name}".encode()
        (path / name).write_bytes(data)
        files[name] = hashlib.sha256(data).hexdigest()
    (path / "manifest.json").write_text(json.dumps({"abi": abi, "files": files}))
    return path


def test_intact_entry_verifies(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    entry = _entry(tmp_path)
    store.verify(entry)
    assert store.entries() == [entry]


@pytest.mark.parametrize("name", BOOT_FILES)
def test_any_changed_boot_file_is_corruption(tmp_path: Path, name: str) -> None:
    entry = _entry(tmp_path)
    (entry / name).write_bytes(b"flipped")
    with pytest.raises(CacheCorruptError, match=name):
        ImageStore(tmp_path).verify(entry)


def test_missing_file_manifest_or_headers_is_corruption(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    entry = _entry(tmp_path)
    (entry / "initrd.img").unlink()
    with pytest.raises(CacheCorruptError, match="missing"):
        store.verify(entry)
    entry = _entry(tmp_path / "b")
    (entry / "manifest.json").write_text("{not json")
    with pytest.raises(CacheCorruptError, match="manifest"):
        store.verify(entry)
    entry = _entry(tmp_path / "c")
    (entry / "tree" / "usr" / "src" / "linux-headers-6.12.1+deb13-amd64").rmdir()
    with pytest.raises(CacheCorruptError, match="headers"):
        store.verify(entry)


def test_prune_removes_everything_not_kept(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    keep = _entry(tmp_path, "6.12.1+deb13-amd64")
    drop = _entry(tmp_path, "7.3.1+deb13-amd64")
    removed = store.prune(keep={keep.name})
    assert removed == [drop] and keep.exists() and not drop.exists()


def test_recipe_lists_the_tools_the_suite_needs() -> None:
    packages = recipe_packages("trixie")
    for needed in ("openssh-server", "udev", "sg3-utils", "gcc", "make", "python3", "kmod"):
        assert needed in packages
    assert all(not p.startswith("#") and " " not in p for p in packages)
