"""The control socket: JSON Lines over a unix stream socket, plus its client.

One request per line, one reply per line::

    {"cmd": "status"}
    {"cmd": "load", "dev": 0, "image": "/abs/path.iso", "wait": 10}
    {"cmd": "eject", "dev": 0, "force": false, "wait": 10}
    {"cmd": "fault", "dev": 0, "spec": "delay:ms=500,op=0x28"}
    {"cmd": "clear-faults", "dev": 0}

Replies are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.  The
server only touches devices through their public methods, so it can run
against in-memory devices in tests exactly as against served fds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from vhba_responder.cue import CueError
from vhba_responder.device import Device
from vhba_responder.faults import FaultSpecError, parse_fault
from vhba_responder.media import MediaKind, Medium
from vhba_responder.sense import SenseError

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
# How long a locked eject waits for the host to honour the eject request
# (udev polls media events every 2 s, then unlocks and ejects).
DEFAULT_EJECT_WAIT_S = 10.0
MAX_EJECT_WAIT_S = 120.0
Describe = Callable[[Device], dict]


class ControlError(Exception):
    """A request that cannot be carried out; becomes ``{"ok": false}``."""


class ControlServer:
    """Answers control requests for a fixed list of devices, on a thread."""

    def __init__(
        self, path: Path, devices: Sequence[Device], describe: Describe | None = None
    ) -> None:
        self.path = Path(path)
        self.devices = list(devices)
        self.describe = describe
        if self.path.is_socket():
            self.path.unlink()  # stale socket from a previous run
        handler = _make_handler(self)
        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="vhba-control", daemon=True
        )

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # ------------------------------------------------------------- requests
    def handle(self, req: Any) -> dict[str, Any]:
        try:
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ControlError('request must be a JSON object with a "cmd" string')
            verb = req["cmd"]
            action = _VERBS.get(verb)
            if action is None:
                raise ControlError(f"unknown command {verb!r} (known: {', '.join(_VERBS)})")
            reply = action(self, req)
            reply["ok"] = True
            return reply
        except (ControlError, FaultSpecError) as exc:
            return {"ok": False, "error": str(exc)}
        except SenseError as exc:
            return {"ok": False, "error": str(exc), "sense": exc.triple}

    def _device(self, req: dict[str, Any]) -> Device:
        index = req.get("dev")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ControlError('"dev" must be an integer device index')
        if not 0 <= index < len(self.devices):
            raise ControlError(f"no device {index} (have {len(self.devices)})")
        return self.devices[index]

    def _status_of(self, dev: Device) -> dict[str, Any]:
        st = dev.status()
        if self.describe is not None:
            st.update(self.describe(dev))
        return st

    def _status(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "devices": [self._status_of(d) for d in self.devices]}

    def _load(self, req: dict[str, Any]) -> dict[str, Any]:
        dev = self._device(req)
        image = req.get("image")
        if not isinstance(image, str) or not image:
            raise ControlError('"image" must be a path')
        kind_name = req.get("kind")
        kind = None
        if kind_name is not None:
            try:
                kind = MediaKind(kind_name)
            except ValueError:
                raise ControlError(f"kind must be one of {[k.value for k in MediaKind]}") from None
        try:
            medium = Medium.open(Path(image), kind)
        except OSError as exc:
            raise ControlError(f"cannot open image {image}: {exc.strerror}") from None
        except CueError as exc:
            raise ControlError(f"cannot use CUE sheet: {exc}") from None
        dev.load(medium, wait_s=self._wait(req))
        return {"device": self._status_of(dev)}

    @staticmethod
    def _wait(req: dict[str, Any]) -> float:
        wait = req.get("wait", DEFAULT_EJECT_WAIT_S)
        if not isinstance(wait, (int, float)) or isinstance(wait, bool) or wait < 0:
            raise ControlError('"wait" must be a number of seconds >= 0')
        return min(float(wait), MAX_EJECT_WAIT_S)

    def _eject(self, req: dict[str, Any]) -> dict[str, Any]:
        dev = self._device(req)
        dev.eject(force=bool(req.get("force", False)), wait_s=self._wait(req))
        return {"device": self._status_of(dev)}

    def _fault(self, req: dict[str, Any]) -> dict[str, Any]:
        dev = self._device(req)
        spec = req.get("spec")
        if not isinstance(spec, str):
            raise ControlError('"spec" must be a fault spec string')
        dev.faults.add(parse_fault(spec))
        return {"device": self._status_of(dev)}

    def _clear_faults(self, req: dict[str, Any]) -> dict[str, Any]:
        dev = self._device(req)
        return {"cleared": dev.faults.clear(), "device": self._status_of(dev)}


_VERBS: dict[str, Callable[[ControlServer, dict[str, Any]], dict[str, Any]]] = {
    "status": ControlServer._status,
    "load": ControlServer._load,
    "eject": ControlServer._eject,
    "fault": ControlServer._fault,
    "clear-faults": ControlServer._clear_faults,
}


def _make_handler(server: ControlServer) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for raw in self.rfile:
                line = raw.strip()
                if not line:
                    continue
                try:
                    req = json.loads(line[:MAX_LINE])
                except ValueError as exc:
                    reply: dict[str, Any] = {"ok": False, "error": f"bad JSON: {exc}"}
                else:
                    reply = server.handle(req)
                    log.info("control %s -> %s", req, "ok" if reply["ok"] else reply["error"])
                self.wfile.write(json.dumps(reply).encode() + b"\n")
                self.wfile.flush()

    return Handler


def request(
    path: Path, req: dict[str, Any], timeout: float = MAX_EJECT_WAIT_S + 10
) -> dict[str, Any]:
    """Send one request and return the parsed reply (client side)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ConnectionError(f"no reply from {path}")
    return json.loads(buf)
