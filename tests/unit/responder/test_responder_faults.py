"""Fault spec parser and the effect of each fault kind on Device.execute."""

from __future__ import annotations

import pytest
from _responder_helpers import be, check, ok, run

from vhba_responder.faults import FaultSet, FaultSpecError, parse_fault


def test_parse_delay():
    f = parse_fault("delay:ms=500,op=0x28")
    assert (f.kind, f.ms, f.op, f.remaining) == ("delay", 500, 0x28, None)


def test_parse_hang_and_die():
    assert parse_fault("hang").op is None
    assert parse_fault("hang:op=0x28").op == 0x28
    assert parse_fault("die").kind == "die"


def test_parse_sense_with_range():
    f = parse_fault("sense:key=3,asc=0x11,ascq=0,lba=100-200")
    assert (f.key, f.asc, f.ascq, f.lba_first, f.lba_last) == (3, 0x11, 0, 100, 200)
    assert not f.info_start
    g = parse_fault("sense:key=2,asc=4,ascq=1,op=0,count=3,info=start")
    assert g.lba_first is None and g.remaining == 3 and g.info_start


def test_parse_short_capacity_dev():
    assert parse_fault("short:bytes=512,op=0x28").nbytes == 512
    f = parse_fault("capacity:blocks=1000,dev=1")
    assert f.blocks == 1000 and f.dev == 1


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "explode",
        "delay",
        "delay:ms=abc",
        "delay:ms=-1",
        "delay:ms=5,bogus=1",
        "delay:ms=5,ms=6",
        "delay:ms",
        "sense:asc=0x11",
        "sense:key=16,asc=1",
        "sense:key=3,asc=0x11,lba=200-100",
        "sense:key=3,asc=0x11,info=middle",
        "short:op=0x28",
        "hang:op=0x100",
        "capacity:blocks=-5",
        "delay:ms=1,count=0",
    ],
)
def test_parse_errors(spec):
    with pytest.raises(FaultSpecError):
        parse_fault(spec)


def test_faultset_count_expires():
    fs = FaultSet()
    fs.add(parse_fault("delay:ms=1,count=2"))
    assert fs.timing(0x28) is not None
    assert fs.timing(0x00) is not None
    assert fs.timing(0x28) is None
    assert fs.snapshot() == []


def test_faultset_op_filter():
    fs = FaultSet()
    fs.add(parse_fault("hang:op=0x28"))
    assert fs.timing(0x00) is None
    assert fs.timing(0x28).kind == "hang"


def _read10(lba: int, n: int):
    return (0x28, 0, *lba.to_bytes(4, "big"), 0, *n.to_bytes(2, "big"), 0)


def test_sense_fault_lba_range(dev):
    dev.faults.add(parse_fault("sense:key=3,asc=0x11,ascq=0,lba=20-21"))
    ok(dev, *_read10(10, 10))  # 10..19 is clean
    s = check(dev, *_read10(15, 10))
    assert s.triple == "03/11/00" and s.valid and s.information == 20
    s = check(dev, *_read10(21, 1))
    assert s.information == 21
    ok(dev, 0x00, 0, 0, 0, 0, 0)  # commands without LBAs are unaffected


def test_sense_fault_info_start(dev):
    dev.faults.add(parse_fault("sense:key=3,asc=0x11,lba=20,info=start"))
    assert check(dev, *_read10(15, 10)).information == 15


def test_sense_fault_on_tur(dev):
    dev.faults.add(parse_fault("sense:key=2,asc=4,ascq=1,op=0,count=1"))
    assert check(dev, 0, 0, 0, 0, 0, 0).triple == "02/04/01"
    assert run(dev, 0, 0, 0, 0, 0, 0).status == 0


def test_short_fault(dev, iso):
    dev.faults.add(parse_fault("short:bytes=512,op=0x28"))
    data = ok(dev, *_read10(16, 1))
    assert data == iso.data[16 * 2048 : 16 * 2048 + 512]
    assert len(ok(dev, 0x12, 0, 0, 0, 96, 0)) == 96


def test_capacity_fault(dev, iso):
    dev.faults.add(parse_fault("capacity:blocks=1000"))
    cap = ok(dev, 0x25, *([0] * 9))
    assert be(cap[0:4]) == 999
    dev.faults.clear()
    assert be(ok(dev, 0x25, *([0] * 9))[0:4]) == iso.blocks - 1
