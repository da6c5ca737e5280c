"""The warm-snapshot cache: one snapshot per QEMU and machine shape, made once.

QEMU itself is replaced by a script that only prints a version (the key
depends on it) and by a machine whose boot and savevm are no-ops: what is
tested is which snapshots the cache keeps, makes and hands out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.build.images import Image
from lab.vm import session
from lab.vm.accel import QEMU_ENV_VAR, AccelChoice
from lab.vm.machine import Machine


class _ColdBoots:
    """Counts the cold boots _make_warm does, each one writing its overlay."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def boots(monkeypatch: pytest.MonkeyPatch) -> _ColdBoots:
    seen = _ColdBoots()

    class NoQemu(Machine):
        def launch(self) -> None:
            seen.count += 1

        def shutdown(self, timeout: float = 20.0) -> None:
            pass

        def savevm(self, tag: str) -> None:
            self.spec.disk.write_text(f"saved {tag}\n")

    class NoSsh:
        def run(self, *args: object, **kwargs: object) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(session, "Machine", NoQemu)
    monkeypatch.setattr(session, "_wait_ssh", lambda *args: NoSsh())
    monkeypatch.setattr(session, "_overlay", lambda base, out: out.write_text("overlay\n"))
    return seen


def _use_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str) -> None:
    script = tmp_path / f"qemu-{version}"
    script.write_text(f"#!/bin/sh\necho 'QEMU emulator version {version}'\n")
    script.chmod(0o755)
    monkeypatch.setenv(QEMU_ENV_VAR, os.fspath(script))


def _image(tmp_path: Path) -> Image:
    path = tmp_path / "images" / "trixie-6.12.118+deb13-amd64-0123"
    path.mkdir(parents=True)
    return Image(path, "trixie", "6.12.118+deb13-amd64")


@pytest.fixture
def warm(boots: _ColdBoots, tmp_path: Path) -> Callable[[], Path]:
    """Ask for the warm overlay of one TCG image (made by a cold boot when missing)."""
    image, shape = _image(tmp_path), session.Shape(AccelChoice("tcg", "test"))
    return lambda: session._ensure_warm(image, shape, print)


def test_two_qemu_versions_keep_their_own_snapshot(
    boots: _ColdBoots, warm: Callable[[], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Seen: the host's QEMU and a newer one sharing a cache replaced each other's."""
    _use_qemu(monkeypatch, tmp_path, "7.2.19")
    old = warm()
    _use_qemu(monkeypatch, tmp_path, "10.0.2")
    new = warm()
    assert old != new
    _use_qemu(monkeypatch, tmp_path, "7.2.19")
    again = warm()
    assert again == old and old.read_text() == "saved ready\n"
    assert boots.count == 2, "a QEMU version's snapshot was made twice"


def test_an_unfinished_snapshot_is_made_again(
    boots: _ColdBoots, warm: Callable[[], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use_qemu(monkeypatch, tmp_path, "7.2.19")
    disk = warm()
    (disk.parent / "warm.json").unlink()  # e.g. the disk filled up while writing it
    assert warm() == disk
    assert boots.count == 2 and (disk.parent / "warm.json").exists()
