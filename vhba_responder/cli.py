"""Command line: ``serve`` runs the drives, ``ctl`` talks to a running server.

Exit codes: 0 success; 1 a control request was refused; 2 usage or
environment error (missing /dev/vhba_ctl, unreadable image, bad fault spec).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vhba_responder import __version__
from vhba_responder.control import ControlServer, request
from vhba_responder.cue import CueError
from vhba_responder.device import Device, Identity
from vhba_responder.faults import Fault, FaultSpecError, parse_fault
from vhba_responder.media import MediaKind, Medium
from vhba_responder.protocol import (
    Address,
    ControlOpenError,
    get_address,
    get_devnum,
    open_control,
)
from vhba_responder.server import DEFAULT_THREADS, Server
from vhba_responder.trace import TraceWriter

log = logging.getLogger("vhba_responder")
PROG = "vhba-responder"
EMPTY_DEVICE = ("", "-")


class UsageError(Exception):
    """Reported as one line ``vhba-responder: error: ...`` with exit code 2."""


SYSTEM_RUNTIME = Path("/run/vhba-responder")
CONTROL_NAME = "control"


def control_candidates(env: Mapping[str, str], uid: int) -> list[Path]:
    """Where a server without ``--control`` listens, best first.

    A systemd service (``RuntimeDirectory=``) gets ``$RUNTIME_DIRECTORY``; a
    user's own server lives in ``$XDG_RUNTIME_DIR``; root's (and one started
    without either) in ``/run/vhba-responder``.
    """
    found = []
    if env.get("RUNTIME_DIRECTORY"):
        found.append(Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / CONTROL_NAME)
    if env.get("XDG_RUNTIME_DIR") and uid != 0:
        found.append(Path(env["XDG_RUNTIME_DIR"]) / "vhba-responder" / CONTROL_NAME)
    found.append(SYSTEM_RUNTIME / CONTROL_NAME)
    return found


def default_control(env: Mapping[str, str], uid: int, serving: bool) -> Path:
    """``serve``: the first candidate; ``ctl``: the first that exists (a user may talk
    to the system's service), else the first, so the error names where it looked."""
    candidates = control_candidates(env, uid)
    if not serving:
        for path in candidates:
            if _exists(path):
                return path
    return candidates[0]


def _exists(path: Path) -> bool:
    """exists() that says False for a path we may not look at (another user's
    $XDG_RUNTIME_DIR inherited through su or runuser) instead of raising."""
    try:
        return path.exists()
    except OSError:
        return False


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="MMC CD/DVD-ROM responder for vhba")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("serve", help="open control fds and emulate one drive per --device")
    s.add_argument("--ctl", type=Path, default=Path("/dev/vhba_ctl"), help="control node")
    s.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="IMAGE",
        help="image for one drive ('-' or '' = no disc); repeat for more drives",
    )
    s.add_argument(
        "--control", type=Path, default=None, metavar="SOCKET",
        help="unix socket for 'ctl' (default: see default_control(): $RUNTIME_DIRECTORY, "
        "$XDG_RUNTIME_DIR/vhba-responder or /run/vhba-responder, file 'control')",
    )  # fmt: skip
    s.add_argument("--trace", type=Path, help="append one JSON line per command here")
    s.add_argument("--log", type=Path, help="log file (default: stderr)")
    s.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    s.add_argument("--ready-file", type=Path, help="JSON written once every fd is served")
    s.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="fault for every drive (or only drive N with dev=N)",
    )
    s.add_argument(
        "--threads",
        type=_positive_int,
        default=DEFAULT_THREADS,
        help="threads per drive: each waits for, runs and answers commands "
        "(more let slow commands overlap)",
    )
    s.add_argument(
        "--no-direct-reads",
        dest="direct_reads",
        action="store_false",
        help="answer every READ here instead of letting the vhba module read the image "
        "(off anyway with --trace, or on a module without direct reads)",
    )

    c = sub.add_parser("ctl", help="send one request to a running server")
    c.add_argument(
        "--control", type=Path, default=None, metavar="SOCKET",
        help="the server's socket (default: the first of serve's defaults that exists)",
    )  # fmt: skip
    cs = c.add_subparsers(dest="action", required=True)
    cs.add_parser("status")
    ld = cs.add_parser("load")
    ld.add_argument("dev", type=int)
    ld.add_argument("image", type=Path)
    ld.add_argument(
        "--kind",
        choices=[k.value for k in MediaKind],
        help="force the disc type instead of choosing by size",
    )
    ld.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="S",
        help="if the current disc is locked: request an eject and wait S seconds",
    )
    ej = cs.add_parser("eject")
    ej.add_argument("dev", type=int)
    ej.add_argument("--force", action="store_true", help="eject even while the tray is locked")
    ej.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="S",
        help="if locked: post an eject request and wait S seconds for the host to unlock",
    )
    fl = cs.add_parser("fault")
    fl.add_argument("dev", type=int)
    fl.add_argument("spec")
    cf = cs.add_parser("clear-faults")
    cf.add_argument("dev", type=int)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "serve":
            return serve(args)
        return ctl(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------- serve
def _setup_logging(path: Path | None, level: str) -> None:
    handler: logging.Handler = (
        logging.FileHandler(path, encoding="utf-8") if path else logging.StreamHandler()
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def _media(specs: Sequence[str]) -> list[Medium | None]:
    out: list[Medium | None] = []
    for spec in specs:
        if spec in EMPTY_DEVICE:
            out.append(None)
            continue
        try:
            out.append(Medium.open(Path(spec)))
        except OSError as exc:
            raise UsageError(f"cannot open image {spec}: {exc.strerror}") from None
        except CueError as exc:
            raise UsageError(f"cannot use CUE sheet: {exc}") from None
    return out


def _faults(specs: Sequence[str], ndev: int) -> list[Fault]:
    faults = []
    for spec in specs:
        try:
            f = parse_fault(spec)
        except FaultSpecError as exc:
            raise UsageError(f"--fault {spec!r}: {exc}") from None
        if f.dev is not None and not 0 <= f.dev < ndev:
            raise UsageError(f"--fault {spec!r}: no device {f.dev} (have {ndev})")
        faults.append(f)
    return faults


def _write_ready(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def ready_document(server: Server, ctl_path: Path, control: Path) -> dict[str, Any]:
    """The ready-file content: where each drive ended up in the SCSI topology."""
    devices = []
    for ep in server.endpoints:
        addr: Address | None = ep.address
        m = ep.device.state.medium
        devices.append(
            {
                "index": ep.device.index,
                "devnum": ep.device.devnum,
                "hctl": str(addr) if addr else None,
                "host": addr.host if addr else None,
                "channel": addr.channel if addr else None,
                "target": addr.target if addr else None,
                "lun": addr.lun if addr else None,
                "medium": m.label if m else None,
                "kind": m.kind.value if m else None,
            }
        )
    return {"pid": os.getpid(), "ctl": str(ctl_path), "control": str(control), "devices": devices}


def serve(args: argparse.Namespace) -> int:
    if not args.device:
        raise UsageError("serve needs at least one --device (IMAGE, or '-' for an empty drive)")
    media = _media(args.device)
    faults = _faults(args.fault, len(args.device))
    _setup_logging(args.log, args.log_level)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    server = Server(TraceWriter(args.trace), threads=args.threads, direct_reads=args.direct_reads)
    control: ControlServer | None = None
    try:
        for index, medium in enumerate(media):
            try:
                fd = open_control(args.ctl)
            except ControlOpenError as exc:
                raise UsageError(exc.strerror) from None
            try:
                devnum = get_devnum(fd)
            except OSError as exc:  # pre-2020 module: fall back to our own numbering
                log.warning("devnum ioctl failed (%s); using index %d", exc, index)
                devnum = index
            try:
                address: Address | None = get_address(fd)
            except OSError as exc:
                log.warning("address ioctl failed: %s", exc)
                address = None
            dev = Device(index=index, devnum=devnum, identity=Identity(serial=f"VL{devnum:06d}"))
            dev.state.medium = medium  # present at power-on: no unit attention
            for f in faults:
                if f.dev is None or f.dev == index:
                    dev.faults.add(dataclasses.replace(f))
            server.add(fd, dev, address)
            log.info(
                "dev %d: serving devnum %d at %s (%s)",
                index,
                devnum,
                address,
                medium.label if medium else "no disc",
            )

        if args.control is None:
            args.control = default_control(os.environ, os.geteuid(), serving=True)
            args.control.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        by_index = {ep.device.index: ep for ep in server.endpoints}
        control = ControlServer(
            args.control,
            [ep.device for ep in server.endpoints],
            describe=lambda d: by_index[d.index].describe(),
        ).start()
        if args.ready_file:
            _write_ready(args.ready_file, ready_document(server, args.ctl, args.control))
        log.info("ready: %d drive(s), control socket %s", len(server.endpoints), args.control)
        while not stop.wait(1.0):
            pass
        log.info("stop requested")
    finally:
        if control is not None:
            control.close()
        server.stop()
        if args.ready_file:
            with contextlib.suppress(FileNotFoundError):
                args.ready_file.unlink()
    return 0


# --------------------------------------------------------------------- ctl
def ctl(args: argparse.Namespace) -> int:
    if args.control is None:
        args.control = default_control(os.environ, os.geteuid(), serving=False)
    req: dict[str, Any] = {"cmd": args.action}
    if args.action != "status":
        req["dev"] = args.dev
    if args.action == "load":
        req["image"] = str(args.image.resolve())
        req["wait"] = args.wait
        if args.kind:
            req["kind"] = args.kind
    elif args.action == "eject":
        req["force"] = args.force
        req["wait"] = args.wait
    elif args.action == "fault":
        req["spec"] = args.spec
    try:
        reply = request(args.control, req)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot talk to {args.control}: {exc}") from None
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1
