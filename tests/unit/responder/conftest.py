"""Fixtures for the responder tests: real ISO9660 images built with pycdlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _responder_helpers

from _responder_helpers import FILES, IsoImage, build_iso

from vhba_responder.device import Device
from vhba_responder.media import Medium

pytest.importorskip("pycdlib")


@pytest.fixture
def iso(tmp_path: Path) -> IsoImage:
    return build_iso(tmp_path / "test.iso", FILES)


@pytest.fixture
def dev(iso: IsoImage) -> Device:
    """A drive with the ISO present since power-on (no unit attention pending)."""
    d = Device(index=0, devnum=3)
    d.state.medium = Medium.open(iso.path)
    return d


@pytest.fixture
def empty_dev() -> Device:
    return Device(index=1, devnum=4)
