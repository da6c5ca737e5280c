"""The harness's control requests reach a real responder control server and back.

``OurResponder.ctl`` speaks the control socket's wire format itself (a small
stdlib client run with ``python3 -c``) instead of the responder's ``ctl``
command; here the same argv runs on the host, through a channel that runs
commands locally, against the responder's own ControlServer.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cell.drives import OurResponder
from lab.errors import GuestCommandError
from lab.vm.guest import CommandChannel, CommandResult
from vhba_responder.control import ControlServer
from vhba_responder.device import Device


class HostChannel(CommandChannel):
    """Runs each command on this host, as a guest's shell would run it."""

    def sh(
        self, script: str, *, timeout: float = 120.0, check: bool = True, stdin: bytes | None = None
    ) -> CommandResult:
        proc = subprocess.run(
            ["sh", "-c", script],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        return CommandResult(script, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[tuple[OurResponder, list[Device]]]:
    devices = [Device(index=0, devnum=10)]
    server = ControlServer(tmp_path / "ctl.sock", devices).start()
    responder = OurResponder(HostChannel())  # type: ignore[arg-type]
    responder.control = str(tmp_path / "ctl.sock")
    yield responder, devices
    server.close()


def test_status_and_faults_round_trip(drive: tuple[OurResponder, list[Device]]) -> None:
    responder, devices = drive
    status = responder.ctl("status")
    assert status["ok"] is True and status["devices"][0]["index"] == 0  # type: ignore[index]
    responder.ctl("fault", 0, spec="die:op=0x28")
    assert devices[0].faults.active, "the fault reached the device"
    responder.ctl("clear-faults", 0)
    assert not devices[0].faults.active


def test_a_refused_request_raises_with_the_responders_words(
    drive: tuple[OurResponder, list[Device]], tmp_path: Path
) -> None:
    responder, _ = drive
    with pytest.raises(GuestCommandError, match=r"cannot open image /nonexistent\.iso"):
        responder.load(0, "/nonexistent.iso")
    with pytest.raises(GuestCommandError, match="no device 3"):
        responder.eject(3)


def test_no_server_raises_naming_the_socket(tmp_path: Path) -> None:
    responder = OurResponder(HostChannel())  # type: ignore[arg-type]
    responder.control = str(tmp_path / "gone.sock")
    with pytest.raises(GuestCommandError, match=r"FileNotFoundError|No such file"):
        responder.ctl("status")
