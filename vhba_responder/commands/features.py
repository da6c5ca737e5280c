"""GET CONFIGURATION features and profiles of a CD/DVD-ROM drive.

Features are data: code, version, whether they are persistent, a predicate
for "current" and a body builder.  The handler in ``mmc.py`` only selects and
concatenates them according to RT and the starting feature number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from vhba_responder.cdb import be16, be32
from vhba_responder.media import BLOCK_SIZE, PROFILE_CD_ROM, PROFILE_DVD_ROM

if TYPE_CHECKING:
    from vhba_responder.device import Device

# Highest-numbered profile first, as MMC asks for the profile list.
PROFILES = (PROFILE_DVD_ROM, PROFILE_CD_ROM)
PHYSICAL_INTERFACE_SCSI = 0x00000001


def _always(dev: Device) -> bool:
    return True


def _has_medium(dev: Device) -> bool:
    return dev.current_profile != 0


def _is_cd(dev: Device) -> bool:
    return dev.current_profile == PROFILE_CD_ROM


def _is_dvd(dev: Device) -> bool:
    return dev.current_profile == PROFILE_DVD_ROM


def _empty(dev: Device) -> bytes:
    return b""


def _profile_list(dev: Device) -> bytes:
    current = dev.current_profile
    return b"".join(be16(p) + bytes((int(p == current), 0)) for p in PROFILES)


def _core(dev: Device) -> bytes:
    return be32(PHYSICAL_INTERFACE_SCSI) + bytes((0x01, 0, 0, 0))  # DBE


def _morphing(dev: Device) -> bytes:
    return bytes(4)  # polled GESN only (ASYNC=0), no operational-change events


def _removable(dev: Device) -> bytes:
    return bytes(((1 << 5) | 0x08 | 0x01, 0, 0, 0))  # tray loader, eject, lock


def _random_readable(dev: Device) -> bytes:
    blocking = 16 if _is_dvd(dev) else 1  # ECC block: 16 sectors on DVD
    return be32(BLOCK_SIZE) + be16(blocking) + bytes((0, 0))


def _cd_read(dev: Device) -> bytes:
    # C2 flags: READ CD returns C2 pointers (all zero: an image has no read errors).
    # No DAP, no CD-Text (READ TOC format 5 is not modelled).
    return bytes((0x02, 0, 0, 0))


def _cd_audio_play(dev: Device) -> bytes:
    # SCAN=0, SCM (separate channel mute)=0, SV (separate volume)=0; 256 volume levels.
    return bytes(2) + be16(256)


@dataclass(frozen=True)
class Feature:
    code: int
    name: str
    version: int
    persistent: bool
    current: Callable[[Device], bool]
    body: Callable[[Device], bytes]

    def descriptor(self, dev: Device) -> bytes:
        body = self.body(dev)
        flags = (self.version << 2) | (int(self.persistent) << 1) | int(self.current(dev))
        return be16(self.code) + bytes((flags, len(body))) + body


FEATURES = (
    Feature(0x0000, "Profile List", 0, True, _always, _profile_list),
    Feature(0x0001, "Core", 1, True, _always, _core),
    Feature(0x0002, "Morphing", 1, True, _always, _morphing),
    Feature(0x0003, "Removable Medium", 0, True, _always, _removable),
    Feature(0x0010, "Random Readable", 0, False, _has_medium, _random_readable),
    Feature(0x001D, "Multi-Read", 0, False, _is_cd, _empty),
    Feature(0x001E, "CD Read", 2, False, _is_cd, _cd_read),
    Feature(0x001F, "DVD Read", 0, False, _is_dvd, _empty),
    Feature(0x0100, "Power Management", 0, True, _always, _empty),
    Feature(0x0103, "CD External Audio Play", 0, False, _is_cd, _cd_audio_play),
)
