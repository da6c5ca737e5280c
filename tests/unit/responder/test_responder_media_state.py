"""Media changes: unit attention once, GESN events agreeing with TUR, tray and lock."""

from __future__ import annotations

from _responder_helpers import check, ok, run

from vhba_responder.media import Medium
from vhba_responder.sense import SenseError

TUR = (0, 0, 0, 0, 0, 0)
GESN = (0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0)
EJECT = (0x1B, 0, 0, 0, 0x02, 0)
CLOSE = (0x1B, 0, 0, 0, 0x03, 0)
PREVENT = (0x1E, 0, 0, 0, 1, 0)
ALLOW = (0x1E, 0, 0, 0, 0, 0)


def _gesn(dev) -> tuple[int, int]:
    data = ok(dev, *GESN)
    return data[4] & 0x0F, data[5]


def _tur_present(dev) -> bool:
    """Linux sr_check_events: present if TUR succeeds or ASC != 0x3A."""
    r = run(dev, *TUR)
    return r.status == 0 or r.sense[12] != 0x3A


def test_no_unit_attention_at_power_on(dev, empty_dev):
    assert run(dev, *TUR).status == 0
    assert check(empty_dev, *TUR).triple == "02/3A/01"


def test_load_gives_one_unit_attention(empty_dev, iso):
    empty_dev.load(Medium.open(iso.path))
    assert check(empty_dev, *TUR).triple == "06/28/00"
    assert run(empty_dev, *TUR).status == 0
    assert run(empty_dev, *TUR).status == 0


def test_unit_attention_reported_by_any_data_command(empty_dev, iso):
    empty_dev.load(Medium.open(iso.path))
    s = check(empty_dev, 0x25, *([0] * 9))
    assert s.triple == "06/28/00"
    assert ok(empty_dev, 0x25, *([0] * 9))


def test_inquiry_getconf_gesn_do_not_clear_unit_attention(empty_dev, iso):
    empty_dev.load(Medium.open(iso.path))
    ok(empty_dev, 0x12, 0, 0, 0, 36, 0)
    ok(empty_dev, 0x46, 0, 0, 0, 0, 0, 0, 0, 8, 0)
    ok(empty_dev, *GESN)
    assert check(empty_dev, *TUR).triple == "06/28/00"


def test_request_sense_reports_and_clears_unit_attention(empty_dev, iso):
    empty_dev.load(Medium.open(iso.path))
    data = ok(empty_dev, 0x03, 0, 0, 0, 18, 0)
    assert (data[2], data[12], data[13]) == (6, 0x28, 0)
    assert run(empty_dev, *TUR).status == 0


def test_gesn_new_media_then_no_change(empty_dev, iso):
    empty_dev.load(Medium.open(iso.path))
    assert _gesn(empty_dev) == (2, 0x02)  # NewMedia, present
    assert _gesn(empty_dev) == (0, 0x02)


def test_gesn_short_allocation_does_not_lose_event(empty_dev, iso):
    empty_dev.load(Medium.open(iso.path))
    ok(empty_dev, 0x4A, 1, 0, 0, 0x10, 0, 0, 0, 4, 0)
    assert _gesn(empty_dev)[0] == 2


def test_gesn_and_tur_agree_through_eject_and_load(dev, iso):
    """Every GESN media-change event must be matched by a TUR-visible change."""
    was_present = _tur_present(dev)
    for action in ("eject", "load", "open", "close"):
        if action == "eject":
            dev.eject()
        elif action == "load":
            dev.load(Medium.open(iso.path))
        elif action == "open":
            ok(dev, *EJECT)
        else:
            ok(dev, *CLOSE)
        event, status = _gesn(dev)
        r = run(dev, *TUR)
        tur_changed = (r.status == 2 and r.sense[12] == 0x28) or (
            (r.status == 0 or r.sense[12] != 0x3A) != was_present
        )
        present = r.status == 0 or r.sense[12] != 0x3A
        if r.status == 2 and r.sense[12] == 0x28:
            present = _tur_present(dev)
        assert event in (2, 3), action
        assert tur_changed, action
        assert bool(status & 0x02) == present, action
        was_present = present


def test_control_eject_opens_tray(dev):
    dev.eject()
    assert check(dev, *TUR).triple == "02/3A/02"
    assert _gesn(dev) == (3, 0x01)  # MediaRemoval, door open, no media
    ok(dev, *CLOSE)
    assert check(dev, *TUR).triple == "02/3A/01"  # closed, empty


def test_start_stop_eject_keeps_disc_on_tray(dev, iso):
    ok(dev, *EJECT)
    assert check(dev, *TUR).triple == "02/3A/02"
    assert check(dev, 0x25, *([0] * 9)).triple == "02/3A/02"
    assert ok(dev, 0x46, 0, 0, 0, 0, 0, 0, 0, 8, 0)[6:8] == b"\0\0"
    ok(dev, *CLOSE)
    assert check(dev, *TUR).triple == "06/28/00"
    assert run(dev, *TUR).status == 0
    assert ok(dev, 0x28, 0, 0, 0, 0, 16, 0, 0, 1, 0) == iso.data[16 * 2048 : 17 * 2048]


def test_prevent_blocks_start_stop_eject(dev):
    ok(dev, *PREVENT)
    assert check(dev, *EJECT).triple == "02/53/02"
    assert run(dev, *TUR).status == 0  # disc still there
    ok(dev, *ALLOW)
    ok(dev, *EJECT)
    assert check(dev, *TUR).triple == "02/3A/02"


def test_prevent_blocks_control_eject_unless_forced(dev):
    ok(dev, *PREVENT)
    try:
        dev.eject()
    except SenseError as exc:
        assert exc.triple == "02/53/02"
    else:
        raise AssertionError("locked eject succeeded")
    assert _gesn(dev)[0] == 1  # EjectRequest reported to the host
    assert run(dev, *TUR).status == 0
    dev.eject(force=True)
    assert check(dev, *TUR).triple == "02/3A/02"
    assert not dev.state.locked


def test_locked_eject_waits_for_host_to_answer_the_request(dev):
    """Like udev's cdrom_id --eject-media: see the request, unlock, eject."""
    import threading
    import time

    ok(dev, *PREVENT)
    done = threading.Event()

    def host() -> None:
        while not done.is_set():
            if _gesn(dev)[0] == 1:
                ok(dev, *ALLOW)
                ok(dev, *EJECT)
                return
            time.sleep(0.02)

    t = threading.Thread(target=host)
    t.start()
    try:
        dev.eject(wait_s=5.0)
    finally:
        done.set()
        t.join()
    assert check(dev, *TUR).triple == "02/3A/02"
    assert dev.state.medium is None  # the operator took the disc


def test_locked_eject_times_out(dev):
    import time

    ok(dev, *PREVENT)
    t0 = time.monotonic()
    try:
        dev.eject(wait_s=0.2)
    except SenseError as exc:
        assert exc.triple == "02/53/02"
    else:
        raise AssertionError("locked eject succeeded")
    assert time.monotonic() - t0 >= 0.2
    assert run(dev, *TUR).status == 0


def test_power_condition_start_stop_ignores_loej(dev):
    ok(dev, 0x1B, 0, 0, 0, 0x32, 0)  # power condition 3 with LoEj
    assert run(dev, *TUR).status == 0


def test_eject_clears_pending_unit_attention(empty_dev, iso):
    empty_dev.load(Medium.open(iso.path))
    empty_dev.eject()
    empty_dev.load(Medium.open(iso.path))
    assert check(empty_dev, *TUR).triple == "06/28/00"
    assert run(empty_dev, *TUR).status == 0


def test_status_document(dev, iso):
    st = dev.status()
    assert st["medium"] == str(iso.path) and st["kind"] == "cd-rom"
    assert st["blocks"] == iso.blocks and st["profile"] == 8
    assert st["tray_open"] is False and st["locked"] is False
