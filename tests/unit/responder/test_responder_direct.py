"""Direct reads: when the drive lets the module read the image, and when it stops it.

The ioctl itself needs our module (covered in the guest by
conformance/test_direct_reads.py); here a recorder stands in for it and the
tests check the decisions: on only while a READ's answer would be exactly the
image bytes, off (synchronously) before anything changes that.
"""

from __future__ import annotations

import errno
import struct

import pytest
from _responder_helpers import check, run

from vhba_responder.device import Device
from vhba_responder.direct import DIRECT_READ, IOCTL_SET_DIRECT_READ, DirectReads
from vhba_responder.faults import parse_fault
from vhba_responder.media import BLOCK_SIZE, Medium

TUR = (0, 0, 0, 0, 0, 0)
EJECT = (0x1B, 0, 0, 0, 0x02, 0)
CLOSE = (0x1B, 0, 0, 0, 0x03, 0)


class Recorder(DirectReads):
    """Keeps the ioctl arguments instead of sending them; ``fail`` makes it refuse."""

    def __init__(self, fail: int | None = None) -> None:
        super().__init__(ctl_fd=-1)
        self.calls: list[tuple[int, int, int, int]] = []
        self.tries = 0
        self.fail = fail

    def _apply(self, arg: bytes) -> None:
        self.tries += 1
        if self.fail is not None:
            raise OSError(self.fail, "refused")
        self.calls.append(DIRECT_READ.unpack(arg))

    @property
    def last(self) -> tuple[int, int, int, int]:
        return self.calls[-1]


OFF = (-1, 0, 0, 0)


def _on(medium: Medium) -> tuple[int, int, int, int]:
    return (medium.source.fileno(), BLOCK_SIZE, 0, medium.blocks)  # type: ignore[attr-defined]


@pytest.fixture
def rec(dev: Device) -> Recorder:
    r = Recorder()
    dev.attach_direct_reads(r)
    return r


def test_ioctl_number_and_layout_match_the_module():
    # _IOW(0xBE, 0xD1, struct vhba_direct_read): 24 bytes, s32 fd, u32 block size, u64 x2
    assert DIRECT_READ.size == 24
    assert IOCTL_SET_DIRECT_READ == 0x4018BED1
    assert DIRECT_READ.pack(3, 2048, 0, 10) == struct.pack("<iIQQ", 3, 2048, 0, 10)


def test_a_disc_present_at_power_on_is_served_directly(dev, rec):
    assert rec.calls == [_on(dev.state.medium)]
    assert dev.status()["direct_reads"] == "on"
    run(dev, *TUR)
    assert len(rec.calls) == 1  # nothing changed: no further ioctl


def test_new_disc_turns_direct_reads_off_until_its_unit_attention_is_reported(dev, rec, iso):
    new = Medium.open(iso.path)
    dev.load(new)
    assert rec.last == OFF  # before load() returned: no read of the old disc after this
    assert check(dev, *TUR).triple == "06/28/00"  # the UA still comes from us
    assert rec.last == OFF
    run(dev, *TUR)
    assert rec.last == _on(new)


def test_eject_and_open_tray_turn_it_off_and_closing_turns_it_back_on(dev, rec):
    medium = dev.state.medium
    run(dev, *EJECT)
    assert rec.last == OFF
    assert dev.status()["direct_reads"] == "off"
    run(dev, *CLOSE)
    check(dev, *TUR)  # 28/00 for the disc that came back
    run(dev, *TUR)
    assert rec.last == _on(medium)
    dev.eject(force=True)
    assert rec.last == OFF


def test_an_injected_fault_turns_it_off_at_once_and_back_on_when_spent(dev, rec):
    dev.faults.add(parse_fault("sense:key=3,asc=0x11,op=0x28,count=1"))
    assert rec.last == OFF
    assert check(dev, 0x28, 0, 0, 0, 0, 16, 0, 0, 1, 0).triple == "03/11/00"
    run(dev, *TUR)
    assert rec.last == _on(dev.state.medium)


def test_in_memory_images_are_never_handed_to_the_module():
    d = Device()
    d.state.medium = Medium.from_bytes(bytes(BLOCK_SIZE * 4))
    r = Recorder()
    d.attach_direct_reads(r)
    run(d, *TUR)
    assert r.calls == []
    assert d.status()["direct_reads"] == "off"


def test_a_module_without_the_ioctl_is_asked_once(dev):
    r = Recorder(fail=errno.ENOTTY)
    dev.attach_direct_reads(r)
    for _ in range(3):
        run(dev, *TUR)
    dev.eject(force=True)
    assert r.tries == 1
    assert dev.status()["direct_reads"] == "unsupported"
