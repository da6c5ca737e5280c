"""Image reads tell the server before they may block, and only then."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vhba_responder import media
from vhba_responder.media import FileImage


def _image(tmp_path: Path, size: int = 64 * 1024) -> tuple[FileImage, bytes]:
    data = os.urandom(size)
    path = tmp_path / "disc.iso"
    path.write_bytes(data)
    return FileImage(path), data


@pytest.mark.parametrize(
    "error",
    [BlockingIOError(11, "not in the page cache"), OSError(95, "not supported by this fs")],
    ids=["uncached", "no-nowait-support"],
)
def test_a_read_that_may_block_calls_the_hook_once_and_still_reads(tmp_path, monkeypatch, error):
    image, data = _image(tmp_path)

    def may_block(*_args):
        raise error

    monkeypatch.setattr(media.os, "preadv", may_block)
    calls = []
    assert image.pread(4096, 8192, lambda: calls.append(1)) == data[8192:12288]
    assert calls == [1]


def test_cached_range_is_served_without_the_hook(tmp_path, monkeypatch):
    image, data = _image(tmp_path)

    def from_cache(fd, buffers, offset, flags):
        assert flags == media._RWF_NOWAIT
        got = os.pread(fd, len(buffers[0]), offset)
        buffers[0][: len(got)] = got
        return len(got)

    monkeypatch.setattr(media.os, "preadv", from_cache)
    assert (
        image.pread(4096, 4096, lambda: pytest.fail("a cached read must not hand off"))
        == (data[4096:8192])
    )


def test_short_cached_read_falls_back_and_pads(tmp_path):
    """A range running past the end of the file: the blocking path pads with zeros."""
    image, data = _image(tmp_path, 3000)
    calls = []
    assert image.pread(4096, 0, lambda: calls.append(1)) == data + bytes(1096)
    assert calls == [1]


def test_no_nowait_support_is_asked_once_per_image(tmp_path, monkeypatch):
    """EOPNOTSUPP is a property of the file system: later reads skip the extra syscall."""
    image, data = _image(tmp_path)
    asked = []

    def unsupported(*_args):
        asked.append(1)
        raise OSError(95, "not supported by this fs")

    monkeypatch.setattr(media.os, "preadv", unsupported)
    calls = []
    for _ in range(3):
        assert image.pread(2048, 0, lambda: calls.append(1)) == data[:2048]
    assert asked == [1] and calls == [1, 1, 1]
