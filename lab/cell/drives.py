"""The userspace side of /dev/vhba_ctl in a guest: our responder or cdemu-daemon.

Both present the same small interface to the conformance suite (start with
media, load, eject, pids, stop, fetch logs), and both report their SCSI address so
the suite finds /dev/srN and /dev/sgN through sysfs, never by a fixed name.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lab.errors import GuestCommandError, GuestWaitError
from lab.vm.guest import CommandResult, Guest, command_text, poll

# The zipapp is how the responder travels (one upload); it runs from the
# unpacked, byte-compiled tree, because Python cannot cache bytecode for a
# zipapp: every start of the .pyz compiled the whole package again (about half
# of a responder start under TCG).  World-readable, so the responder can also
# run as an unprivileged user.
GUEST_PYZ = "/usr/local/lib/vhba-responder.pyz"
GUEST_RESPONDER = "/usr/local/lib/vhba-responder"
# "[v]" keeps pgrep/pkill from matching the shell command line that runs them.
_PATTERN = "[v]hba-responder serve"
# The session bus CdemuDaemon.start() runs ("[d]": as above).
_BUS_PATTERN = "[d]bus-daemon --session --fork --print-address=1"
STATE = "/run/vhba-responder"
LOGS = "/var/log/vhba-responder"
# One request to a running responder's control socket, in its wire format (a
# JSON line each way, vhba_responder/control.py).  The harness does not run the
# responder's own ``ctl`` command for this: that imports the whole package,
# 1.2 s a call under TCG against 0.3 s for this, and the suite asks its drive
# something at every disc change.
_CTL_CLIENT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.settimeout(float(sys.argv[3]))\n"
    "s.connect(sys.argv[1])\n"
    "s.sendall(sys.argv[2].encode() + b'\\n')\n"
    "reply = b''\n"
    "while not reply.endswith(b'\\n'):\n"
    "    chunk = s.recv(65536)\n"
    "    if not chunk:\n"
    "        break\n"
    "    reply += chunk\n"
    "sys.stdout.write(reply.decode())\n"
)
# Before a drive is stopped, udev's probes of it (cdrom_id, blkid) are let end:
# a probe that still holds /dev/srN when the device goes makes udev-worker's
# close the last one, which runs into sr's use-after-free on many kernels
# (docs/kernel-bugs.md; seen on 6.16 as a GPF).  Tests that want an opener
# left do so on purpose (conformance/held_open.py).  Bounded: a probe stuck on
# a stalled drive must not hold the stop up for long.
STOP_SETTLE_S = 5.0


@dataclass(frozen=True)
class DriveNode:
    hctl: str  # H:C:T:L as in /sys/bus/scsi/devices
    sr: str  # /dev/srN
    sg: str  # /dev/sgN


class Drive(Protocol):
    """What the lab, the suite and the benchmarks use of a userspace drive in a guest.

    Implemented by :class:`OurResponder` and :class:`CdemuDaemon`; get one
    with :func:`make_drive`.  Our responder takes more (fault injection,
    traces, control commands); code that needs those checks for it.
    """

    name: str
    guest: Guest
    nodes: list[DriveNode]

    def ship(self) -> None:
        """Put the drive's program into the guest (a no-op where the image has it)."""

    def start(
        self, media: list[str | None], faults: list[str] | None = None, timeout: float = 30.0
    ) -> list[DriveNode]:
        """One virtual drive per entry of ``media`` (None: empty); their sr/sg nodes."""
        ...

    def load(self, index: int, path: str) -> None: ...

    def eject(self, index: int) -> None: ...

    def pids(self) -> list[int]:
        """Process ids of the drive's program in the guest (empty: not running)."""
        ...

    def running(self) -> bool: ...

    def stop(self, timeout: float = 20.0) -> None: ...

    def fetch_logs(self, dest: Path) -> dict[str, Path]:
        """Copy the drive's logs to ``dest``; label -> local file."""
        ...


def make_drive(kind: str, guest: Guest) -> Drive:
    """The drive a cell's responder id names: ``ours`` or ``cdemu``."""
    if kind == "ours":
        return OurResponder(guest)
    if kind == "cdemu":
        return CdemuDaemon(guest)
    raise GuestCommandError(f"unknown responder {kind!r}: use ours or cdemu")


def find_nodes(guest: Guest, hctl: str, timeout: float = 20.0) -> DriveNode:
    """Wait until sr and sg are bound to ``hctl`` and udev has created their nodes."""
    sysfs = command_text([f"/sys/bus/scsi/devices/{hctl}"])
    probe = (
        f'b=$(ls {sysfs}/block 2>/dev/null); g=$(basename "$(readlink {sysfs}/generic)"); '
        '[ -n "$b" ] && [ -n "$g" ] && [ -b "/dev/$b" ] && [ -c "/dev/$g" ] && echo "$b $g"'
    )
    try:
        result = poll(lambda: guest.sh(probe, check=False), timeout * guest.patience, 0.1)
    except GuestWaitError:
        raise GuestCommandError(
            f"no sr/sg device appeared for {hctl} within {timeout:.0f} s"
        ) from None
    block, generic = result.stdout.split()
    return DriveNode(hctl, f"/dev/{block}", f"/dev/{generic}")


def _pgrep(guest: Guest, pgrep_args: Sequence[str]) -> list[int]:
    """Process ids ``pgrep pgrep_args`` finds in the guest."""
    return [int(pid) for pid in guest.run(["pgrep", *pgrep_args], check=False).stdout.split()]


def wait_gone(guest: Guest, pgrep_args: Sequence[str], timeout: float) -> bool:
    """Poll (from the host) until ``pgrep pgrep_args`` finds no process; False on timeout."""
    deadline = time.monotonic() + timeout * guest.patience
    while guest.run(["pgrep", *pgrep_args], check=False).rc == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def unpack_commands(pyz: str, dest: str, python: str = "python3") -> list[list[str]]:
    """The commands that turn the shipped zipapp into a byte-compiled tree at ``dest``.

    ``python dest serve ...`` then runs exactly as ``python pyz serve ...``
    (a directory with a ``__main__.py`` runs like a zipapp) without compiling.
    """
    return [
        ["rm", "-rf", dest],
        [python, "-m", "zipfile", "-e", pyz, dest],
        [python, "-m", "compileall", "-q", dest],
        ["chmod", "-R", "a+rX", dest],
    ]


class OurResponder:
    """vhba_responder shipped as a zipapp and run in the guest."""

    name = "ours"
    control = f"{STATE}/ctl.sock"  # the control socket ``serve --control`` opens

    def __init__(self, guest: Guest, user: str = "root") -> None:
        self.guest = guest
        self.user = user
        self.nodes: list[DriveNode] = []

    def ship(self) -> None:
        from vhba_responder.zipapp import build

        with tempfile.TemporaryDirectory() as tmp:
            pyz = build(Path(tmp) / "vhba-responder.pyz")
            self.guest.upload(pyz, GUEST_PYZ, mode=0o644)
        for argv in unpack_commands(GUEST_PYZ, GUEST_RESPONDER):
            self.guest.run(argv)

    def start(
        self,
        media: list[str | None],
        faults: list[str] | None = None,
        timeout: float = 30.0,
        *,
        trace: bool = False,
        extra_args: Sequence[str] = (),
    ) -> list[DriveNode]:
        """Serve one device per entry of ``media`` (None: no medium); wait for sr/sg.

        By default as users run it, so our module serves plain reads itself
        (docs/direct-reads.md); ``trace=True`` keeps every command in the
        responder and records it (the trace group, the bench's traced stack).
        ``extra_args`` are more ``serve`` options.
        """
        args = [
            "python3", GUEST_RESPONDER, "serve", "--ctl", "/dev/vhba_ctl",
            "--control", self.control,
            "--log", f"{LOGS}/responder.log", "--ready-file", f"{STATE}/ready.json",
        ]  # fmt: skip
        if trace:
            args += ["--trace", f"{LOGS}/trace.jsonl"]
        args += extra_args
        for medium in media:
            args += ["--device", medium or "-"]
        for fault in faults or []:
            args += ["--fault", fault]
        if self.user != "root":
            args = ["runuser", "-u", self.user, "--", *args]
        self.guest.run(["mkdir", "-p", STATE, LOGS])
        if self.user != "root":
            self.guest.run(["chown", "-R", self.user, STATE, LOGS])
        self.guest.run(["rm", "-f", f"{STATE}/ready.json"])
        self.guest.sh(f"(setsid {command_text(args)} </dev/null >{LOGS}/stdout.log 2>&1 &)")
        try:
            self.guest.wait_for(["test", "-s", f"{STATE}/ready.json"], timeout=timeout)
        except GuestWaitError:
            out = self.guest.run(["cat", f"{LOGS}/stdout.log"], check=False).stdout
            raise GuestCommandError(
                f"responder did not become ready in {timeout:.0f} s: {out.strip()}"
            ) from None
        info = json.loads(self.guest.run(["cat", f"{STATE}/ready.json"]).stdout)
        self.nodes = [find_nodes(self.guest, dev["hctl"]) for dev in info["devices"]]
        return self.nodes

    def ctl(self, cmd: str, dev: int | None = None, **fields: object) -> dict[str, object]:
        """One control request (e.g. ``ctl("fault", 0, spec="die:op=0x28")``); its reply.

        A refused request (``"ok": false``) or a silent socket raises
        GuestCommandError with the responder's own words.
        """
        req = {"cmd": cmd, **({} if dev is None else {"dev": dev}), **fields}
        wait = 130  # the server's longest wait (a locked eject) and some
        argv = ["python3", "-c", _CTL_CLIENT, self.control, json.dumps(req), str(wait)]
        result = self.guest.run(argv, timeout=wait + 30, check=False)
        try:
            reply = dict(json.loads(result.stdout))
        except ValueError:
            reply = {}
        if result.rc != 0 or reply.get("ok") is not True:
            why = reply.get("error") or result.stderr.strip() or "no reply"
            raise GuestCommandError(f"responder control request {json.dumps(req)} failed: {why}")
        return reply

    def load(self, index: int, path: str) -> None:
        self.ctl("load", index, image=path)

    def eject(self, index: int) -> None:
        self.ctl("eject", index)

    def pids(self) -> list[int]:
        return _pgrep(self.guest, ["-f", _PATTERN])

    def running(self) -> bool:
        return bool(self.pids())

    def stop(self, timeout: float = 20.0) -> None:
        self.guest.settle(STOP_SETTLE_S)
        self.guest.run(["pkill", "-TERM", "-f", _PATTERN], check=False)
        if not wait_gone(self.guest, ["-f", _PATTERN], timeout):
            self.guest.run(["pkill", "-KILL", "-f", _PATTERN], check=False)
        self.nodes = []

    def fetch_logs(self, dest: Path) -> dict[str, Path]:
        got = {}
        for label, remote in (("responder_log", f"{LOGS}/responder.log"),
                              ("cdb_trace", f"{LOGS}/trace.jsonl")):  # fmt: skip
            local = dest / Path(remote).name
            try:
                self.guest.download(remote, local)
                got[label] = local
            except OSError:
                continue
        return got


# Longer than the kernel's default media poll interval (block.events_dfl_poll_msecs).
EJECT_SETTLE_S = 2.5


class CdemuDaemon:
    """Debian's packaged cdemu-daemon on a private session bus (headless recipe)."""

    name = "cdemu"
    BUS_FILE = "/run/vhba-cdemu.bus"

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.nodes: list[DriveNode] = []
        self._bus: str | None = None  # the session bus address, once read

    def ship(self) -> None:
        """Nothing to upload: the daemon is part of every guest image."""

    def _cdemu(self, *words: str, check: bool = True) -> CommandResult:
        """``cdemu WORDS`` on the daemon's session bus (its address is in BUS_FILE)."""
        if self._bus is None:
            self._bus = self.guest.run(["cat", self.BUS_FILE]).stdout.strip()
        return self.guest.run(
            ["env", f"DBUS_SESSION_BUS_ADDRESS={self._bus}", "cdemu", *words], check=check
        )

    def start(
        self, media: list[str | None], faults: list[str] | None = None, timeout: float = 30.0
    ) -> list[DriveNode]:
        if faults:
            raise GuestCommandError("cdemu-daemon has no fault injection; use our responder")
        count = len(media)
        self.guest.run(["mkdir", "-p", LOGS])
        self.guest.sh(f"dbus-daemon --session --fork --print-address=1 > {self.BUS_FILE}")
        self._bus = bus = self.guest.run(["cat", self.BUS_FILE]).stdout.strip()
        daemon = [
            "setsid", "env", f"DBUS_SESSION_BUS_ADDRESS={bus}", "cdemu-daemon",
            f"--num-devices={count}", f"--logfile={LOGS}/cdemu-daemon.log",
        ]  # fmt: skip
        self.guest.sh(f"({command_text(daemon)} </dev/null >{LOGS}/stdout.log 2>&1 &)")
        deadline = time.monotonic() + timeout * self.guest.patience
        while self._cdemu("status", check=False).rc != 0:
            if time.monotonic() > deadline:
                raise GuestCommandError("cdemu-daemon did not answer on its session bus")
            time.sleep(0.5)
        for index, medium in enumerate(media):
            if medium:
                self.load(index, medium)
        self.nodes = []
        for index in range(count):
            hctl = self._hctl(index, deadline)
            self.nodes.append(find_nodes(self.guest, hctl))
        return self.nodes

    def _hctl(self, index: int, deadline: float) -> str:
        """Map cdemu's device index to H:C:T:L via its sr name and sysfs."""
        while True:
            out = self._cdemu("device-mapping", check=False).stdout
            for line in out.splitlines():
                words = line.split()
                if (
                    words
                    and words[0] == str(index)
                    and len(words) >= 2
                    and words[1].startswith("/dev/sr")
                ):
                    sr = Path(words[1]).name
                    found = self.guest.run(["readlink", "-f", f"/sys/block/{sr}/device"])
                    return Path(found.stdout.strip()).name
            if time.monotonic() > deadline:
                raise GuestCommandError(f"cdemu-daemon never mapped device {index}: {out}")
            time.sleep(0.5)

    def loaded(self, index: int) -> bool:
        """Whether cdemu says drive ``index`` holds a disc (``cdemu status``)."""
        out = self._cdemu("status").stdout
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == str(index):
                return words[1] == "True"
        raise GuestCommandError(f"cdemu status does not list device {index}: {out}")

    def load(self, index: int, path: str) -> None:
        # cdemu refuses to load over a disc ("AlreadyLoaded"): swap like a user would.
        if self.loaded(index):
            self.eject(index)
        self._cdemu("load", str(index), path)

    def eject(self, index: int) -> None:
        """Unload, and let the eject play out before anything else happens.

        cdemu reports an unload as a press of the drive's eject button (a GESN
        eject request).  The kernel sees it at its next media poll (every 2 s)
        and udev answers with ``cdrom_id --eject-media``: a disc loaded before
        that eject arrives is thrown out again (seen as a drive that stays
        empty after ``cdemu load`` succeeded).
        """
        self._cdemu("unload", str(index))
        time.sleep(EJECT_SETTLE_S)
        self.guest.settle()

    def pids(self) -> list[int]:
        return _pgrep(self.guest, ["-x", "cdemu-daemon"])

    def running(self) -> bool:
        return bool(self.pids())

    def stop(self, timeout: float = 20.0) -> None:
        self.guest.settle(STOP_SETTLE_S)
        self.guest.run(["pkill", "-TERM", "-x", "cdemu-daemon"], check=False)
        if not wait_gone(self.guest, ["-x", "cdemu-daemon"], timeout):
            self.guest.run(["pkill", "-KILL", "-x", "cdemu-daemon"], check=False)
        self.guest.run(["pkill", "-f", _BUS_PATTERN], check=False)  # the bus start() began
        self._bus = None
        self.nodes = []

    def fetch_logs(self, dest: Path) -> dict[str, Path]:
        local = dest / "cdemu-daemon.log"
        try:
            self.guest.download(f"{LOGS}/cdemu-daemon.log", local)
        except OSError:
            return {}
        return {"responder_log": local}
