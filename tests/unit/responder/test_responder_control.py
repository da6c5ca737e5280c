"""Control socket protocol against in-memory devices."""

from __future__ import annotations

import socket

import pytest
from _responder_helpers import run

from vhba_responder.control import ControlServer, request
from vhba_responder.device import Device


@pytest.fixture
def ctl(tmp_path):
    devices = [Device(index=0, devnum=10), Device(index=1, devnum=11)]
    path = tmp_path / "ctl.sock"
    srv = ControlServer(path, devices, describe=lambda d: {"hctl": f"9:0:{d.index}:0"}).start()
    yield path, devices
    srv.close()


def test_status(ctl):
    path, _ = ctl
    reply = request(path, {"cmd": "status"})
    assert reply["ok"] is True
    assert [d["index"] for d in reply["devices"]] == [0, 1]
    assert reply["devices"][1]["devnum"] == 11 and reply["devices"][1]["hctl"] == "9:0:1:0"
    assert reply["devices"][0]["medium"] is None


def test_load_and_eject(ctl, iso):
    path, devices = ctl
    reply = request(path, {"cmd": "load", "dev": 1, "image": str(iso.path)})
    assert reply["ok"] and reply["device"]["medium"] == str(iso.path)
    assert run(devices[1], 0, 0, 0, 0, 0, 0).sense_text == "06/28/00"
    assert run(devices[1], 0, 0, 0, 0, 0, 0).status == 0
    reply = request(path, {"cmd": "eject", "dev": 1})
    assert reply["ok"] and reply["device"]["tray_open"] is True
    assert run(devices[1], 0, 0, 0, 0, 0, 0).sense_text == "02/3A/02"


def test_load_forced_kind(ctl, iso):
    path, _ = ctl
    reply = request(path, {"cmd": "load", "dev": 0, "image": str(iso.path), "kind": "dvd-rom"})
    assert reply["device"]["kind"] == "dvd-rom" and reply["device"]["profile"] == 0x10


def test_locked_eject_refused(ctl, iso):
    path, devices = ctl
    request(path, {"cmd": "load", "dev": 0, "image": str(iso.path)})
    assert run(devices[0], 0x1E, 0, 0, 0, 1, 0).sense_text == "06/28/00"  # UA comes first
    assert run(devices[0], 0x1E, 0, 0, 0, 1, 0).status == 0
    reply = request(path, {"cmd": "eject", "dev": 0, "wait": 0.1})
    assert reply["ok"] is False and reply["sense"] == "02/53/02"
    assert request(path, {"cmd": "eject", "dev": 0, "wait": -1})["ok"] is False
    reply = request(path, {"cmd": "load", "dev": 0, "image": str(iso.path), "wait": 0.1})
    assert reply["ok"] is False and reply["sense"] == "02/53/02"
    assert run(devices[0], 0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0).data[4] == 1  # eject request
    reply = request(path, {"cmd": "eject", "dev": 0, "force": True})
    assert reply["ok"] is True


def test_fault_and_clear(ctl):
    path, devices = ctl
    reply = request(path, {"cmd": "fault", "dev": 0, "spec": "delay:ms=5,op=0x28"})
    assert reply["ok"] and reply["device"]["faults"][0]["spec"] == "delay:ms=5,op=0x28"
    assert devices[0].faults.timing(0x28) is not None
    reply = request(path, {"cmd": "clear-faults", "dev": 0})
    assert reply["ok"] and reply["cleared"] == 1 and devices[0].faults.snapshot() == []


@pytest.mark.parametrize(
    "req,needle",
    [
        ({"cmd": "frobnicate"}, "unknown command"),
        ({"cmd": "eject", "dev": 7}, "no device 7"),
        ({"cmd": "eject", "dev": "0"}, "integer"),
        ({"cmd": "load", "dev": 0, "image": "/nonexistent.iso"}, "cannot open image"),
        ({"cmd": "load", "dev": 0}, "image"),
        ({"cmd": "fault", "dev": 0, "spec": "boom"}, "unknown fault kind"),
        (["status"], "JSON object"),
    ],
)
def test_errors(ctl, req, needle):
    path, _ = ctl
    reply = request(path, req)
    assert reply["ok"] is False and needle in reply["error"]


def test_bad_json_and_multiple_requests_per_connection(ctl):
    path, _ = ctl
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(b'not json\n{"cmd": "status"}\n')
        buf = b""
        while buf.count(b"\n") < 2:
            buf += s.recv(65536)
    first, second = buf.splitlines()
    assert b'"ok": false' in first and b"bad JSON" in first
    assert b'"ok": true' in second
