#!/usr/bin/env python3
"""The cdrom layer's audio ioctls on a drive, as a CD player or ripper calls them.

Runs in the guest (stdlib only, Python >= 3.9) and prints one JSON object:
``toc`` (CDROMREADTOCHDR / CDROMREADTOCENTRY in LBA and MSF form), ``rip``
(CDROMREADAUDIO of a track's span, 75 frames per call, as sha256), or
``play`` (CDROMPLAYMSF, then CDROMSUBCHNL, CDROMPAUSE / CDROMRESUME).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import hashlib
import json
import os
import sys
import time
from typing import Any

CDROMPAUSE, CDROMRESUME, CDROMPLAYMSF = 0x5301, 0x5302, 0x5303
CDROMREADTOCHDR, CDROMREADTOCENTRY, CDROMSUBCHNL = 0x5305, 0x5306, 0x530B
CDROMREADAUDIO = 0x530E
CDROM_LBA, CDROM_MSF = 0x01, 0x02
CD_FRAMESIZE_RAW = 2352


class Msf0(ctypes.Structure):
    _fields_ = [("minute", ctypes.c_uint8), ("second", ctypes.c_uint8), ("frame", ctypes.c_uint8)]


class Addr(ctypes.Union):
    _fields_ = [("msf", Msf0), ("lba", ctypes.c_int)]


class TocHdr(ctypes.Structure):
    _fields_ = [("trk0", ctypes.c_uint8), ("trk1", ctypes.c_uint8)]


class TocEntry(ctypes.Structure):
    _fields_ = [("track", ctypes.c_uint8), ("adr_ctrl", ctypes.c_uint8),  # adr: low nibble
                ("format", ctypes.c_uint8), ("addr", Addr),
                ("datamode", ctypes.c_uint8)]  # fmt: skip


class SubChnl(ctypes.Structure):
    _fields_ = [("format", ctypes.c_uint8), ("audiostatus", ctypes.c_uint8),
                ("adr_ctrl", ctypes.c_uint8), ("trk", ctypes.c_uint8), ("ind", ctypes.c_uint8),
                ("absaddr", Addr), ("reladdr", Addr)]  # fmt: skip


class ReadAudio(ctypes.Structure):
    _fields_ = [("addr", Addr), ("addr_format", ctypes.c_uint8), ("nframes", ctypes.c_int),
                ("buf", ctypes.c_void_p)]  # fmt: skip


class MsfRange(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint8) for name in ("m0", "s0", "f0", "m1", "s1", "f1")]


def _msf(lba: int) -> tuple[int, int, int]:
    frames = lba + 150
    return frames // 4500, frames // 75 % 60, frames % 75


def toc(fd: int) -> dict[str, Any]:
    hdr = TocHdr()
    fcntl.ioctl(fd, CDROMREADTOCHDR, hdr)
    entries = []
    for track in [*range(hdr.trk0, hdr.trk1 + 1), 0xAA]:
        by_lba, by_msf = (
            TocEntry(track=track, format=CDROM_LBA),
            TocEntry(track=track, format=CDROM_MSF),
        )
        fcntl.ioctl(fd, CDROMREADTOCENTRY, by_lba)
        fcntl.ioctl(fd, CDROMREADTOCENTRY, by_msf)
        m = by_msf.addr.msf
        entries.append({"track": track, "ctrl": by_lba.adr_ctrl >> 4, "lba": by_lba.addr.lba,
                        "msf": [m.minute, m.second, m.frame]})  # fmt: skip
    return {"first": hdr.trk0, "last": hdr.trk1, "entries": entries}


def rip(fd: int, start: int, sectors: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    buf = ctypes.create_string_buffer(75 * CD_FRAMESIZE_RAW)
    done = 0
    while done < sectors:
        n = min(75, sectors - done)
        req = ReadAudio(addr_format=CDROM_LBA, nframes=n, buf=ctypes.addressof(buf))
        req.addr.lba = start + done
        fcntl.ioctl(fd, CDROMREADAUDIO, req)
        digest.update(buf.raw[: n * CD_FRAMESIZE_RAW])
        done += n
    return {"sha256": digest.hexdigest(), "sectors": done}


def _frames(msf: Msf0) -> int:
    return (msf.minute * 60 + msf.second) * 75 + msf.frame


def subchannel(fd: int) -> dict[str, Any]:
    """Where play is.  Asked in MSF: the cdrom layer's conversion to LBA takes the
    2 s lead-in off the track-relative time too, which is not an LBA."""
    sub = SubChnl(format=CDROM_MSF)
    fcntl.ioctl(fd, CDROMSUBCHNL, sub)
    return {"status": sub.audiostatus, "track": sub.trk, "index": sub.ind,
            "abs": _frames(sub.absaddr.msf) - 150, "rel": _frames(sub.reladdr.msf)}  # fmt: skip


def play(fd: int, start: int, end: int) -> dict[str, Any]:
    fcntl.ioctl(fd, CDROMPLAYMSF, MsfRange(*_msf(start), *_msf(end)))
    time.sleep(0.5)
    playing = subchannel(fd)
    fcntl.ioctl(fd, CDROMPAUSE)
    paused = subchannel(fd)
    time.sleep(1.0)
    still = subchannel(fd)
    fcntl.ioctl(fd, CDROMRESUME)
    resumed = subchannel(fd)
    time.sleep((end - start) / 75 + 1.0)
    return {"playing": playing, "paused": paused, "still": still, "resumed": resumed,
            "ended": subchannel(fd)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("node")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("toc")
    p = sub.add_parser("rip")
    p.add_argument("start", type=int)
    p.add_argument("sectors", type=int)
    p = sub.add_parser("play")
    p.add_argument("start", type=int)
    p.add_argument("end", type=int)
    args = parser.parse_args()
    fd = os.open(args.node, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if args.mode == "toc":
            out = toc(fd)
        elif args.mode == "rip":
            out = rip(fd, args.start, args.sectors)
        else:
            out = play(fd, args.start, args.end)
    except OSError as exc:
        out = {"error": f"{exc.strerror} ({exc.errno})"}
    finally:
        os.close(fd)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
