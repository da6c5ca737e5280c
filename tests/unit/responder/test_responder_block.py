"""READ CAPACITY, READ(10)/(12), READ CD, SEEK, and CD/DVD selection by size."""

from __future__ import annotations

import os

import pytest
from _responder_helpers import be, check, ok, run

from vhba_responder.device import Device
from vhba_responder.media import CD_MAX_BYTES, MediaKind, Medium, kind_for_size


def _read10(lba: int, n: int) -> tuple[int, ...]:
    return (0x28, 0, *lba.to_bytes(4, "big"), 0, *n.to_bytes(2, "big"), 0)


def _read12(lba: int, n: int) -> tuple[int, ...]:
    return (0xA8, 0, *lba.to_bytes(4, "big"), *n.to_bytes(4, "big"), 0, 0)


def _read_cd(lba: int, n: int, byte9: int = 0x10, sector_type: int = 0, sub: int = 0):
    return (0xBE, sector_type << 2, *lba.to_bytes(4, "big"), *n.to_bytes(3, "big"), byte9, sub, 0)


def test_read_capacity(dev, iso):
    data = ok(dev, 0x25, *([0] * 9))
    assert len(data) == 8
    assert be(data[0:4]) == iso.blocks - 1
    assert be(data[4:8]) == 2048


def test_read_capacity_lba_without_pmi(dev):
    assert check(dev, 0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0).triple == "05/24/00"


def test_read10_returns_iso_bytes(dev, iso):
    assert ok(dev, *_read10(16, 1)) == iso.data[16 * 2048 : 17 * 2048]
    assert ok(dev, *_read10(16, 1))[1:6] == b"CD001"  # primary volume descriptor


def test_read10_file_contents_match(dev, iso):
    from _responder_helpers import FILES

    for name, content in FILES.items():
        lba = iso.extents[name]
        n = (len(content) + 2047) // 2048
        assert ok(dev, *_read10(lba, n))[: len(content)] == content


def test_read12_multi_block(dev, iso):
    assert ok(dev, *_read12(0, iso.blocks)) == iso.data


def test_read_zero_blocks(dev):
    assert ok(dev, *_read10(5, 0)) == b""


def test_read_last_block_ok_and_one_past_fails(dev, iso):
    last = iso.blocks - 1
    assert ok(dev, *_read10(last, 1)) == iso.data[last * 2048 :]
    s = check(dev, *_read10(last, 2))
    assert s.triple == "05/21/00" and s.valid and s.information == last


def test_read_out_of_range_information_is_lba(dev, iso):
    s = check(dev, *_read12(iso.blocks + 100, 1))
    assert s.triple == "05/21/00" and s.valid and s.information == iso.blocks + 100


def test_read_truncated_to_transport_buffer(dev, iso):
    assert ok(dev, *_read10(0, 4), alloc=4096) == iso.data[:4096]


def test_read_without_medium(empty_dev):
    s = check(empty_dev, *_read10(0, 1))
    assert s.triple == "02/3A/01"


def test_read_cd_user_data(dev, iso):
    assert ok(dev, *_read_cd(16, 2)) == iso.data[16 * 2048 : 18 * 2048]
    assert ok(dev, *_read_cd(16, 2, sector_type=2)) == iso.data[16 * 2048 : 18 * 2048]


def test_read_cd_no_fields_transfers_nothing(dev):
    assert ok(dev, *_read_cd(16, 2, byte9=0)) == b""


@pytest.mark.parametrize("sector_type", [1, 3, 4, 5])
def test_read_cd_other_sector_types(dev, sector_type):
    s = check(dev, *_read_cd(16, 1, sector_type=sector_type))
    assert s.triple == "05/64/00"


def test_read_cd_reserved_selections_rejected(dev):
    assert check(dev, *_read_cd(16, 1, byte9=0x16)).triple == "05/24/00"  # C2 code 3
    assert check(dev, *_read_cd(16, 1, sub=3)).triple == "05/24/00"
    assert check(dev, *_read_cd(16, 1, sector_type=6)).triple == "05/24/00"


def test_read_cd_range(dev, iso):
    s = check(dev, *_read_cd(iso.blocks, 1))
    assert s.triple == "05/21/00" and s.information == iso.blocks


def test_seek(dev, iso):
    assert ok(dev, 0x2B, 0, 0, 0, 0, 10, 0, 0, 0, 0) == b""
    s = check(dev, 0x2B, 0, *iso.blocks.to_bytes(4, "big"), 0, 0, 0, 0)
    assert s.triple == "05/21/00" and s.information == iso.blocks


def test_kind_threshold():
    assert kind_for_size(CD_MAX_BYTES) is MediaKind.CD_ROM
    assert kind_for_size(CD_MAX_BYTES + 2048) is MediaKind.DVD_ROM


def test_sparse_big_image_is_dvd(tmp_path):
    path = tmp_path / "big.iso"
    size = (1 << 30) + 512 * 2048  # just over 1 GiB, sparse
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(size - 2048)
        fh.write(b"LASTBLOCK".ljust(2048, b"."))
    medium = Medium.open(path)
    assert medium.kind is MediaKind.DVD_ROM
    dev = Device()
    dev.state.medium = medium
    cap = ok(dev, 0x25, *([0] * 9))
    assert be(cap[0:4]) == size // 2048 - 1
    last = size // 2048 - 1
    assert ok(dev, *_read10(last, 1)).startswith(b"LASTBLOCK")
    conf = ok(dev, 0x46, 0, 0, 0, 0, 0, 0, 0, 8, 0)
    assert be(conf[6:8]) == 0x0010
    assert check(dev, *_read_cd(0, 1)).triple == "05/64/00"
    os.unlink(path)


def test_forced_kind():
    m = Medium.from_bytes(bytes(2048 * 4), kind=MediaKind.DVD_ROM)
    assert m.kind is MediaKind.DVD_ROM and m.blocks == 4


def test_concurrent_reads_are_consistent(dev, iso):
    from concurrent.futures import ThreadPoolExecutor

    def one(lba: int) -> bool:
        return dev.execute(bytes(_read10(lba, 1))).data == iso.data[lba * 2048 : (lba + 1) * 2048]

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, [i % iso.blocks for i in range(400)]))


def test_status_good_has_no_sense(dev):
    r = run(dev, *_read10(0, 1))
    assert r.status == 0 and r.sense == b"" and r.sense_text is None
