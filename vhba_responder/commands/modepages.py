"""Mode pages of a read-only CD/DVD drive, encoded as MODE SENSE returns them.

Only pages Linux or common tools read are provided: 0x01 (error recovery),
0x0D (CD device parameters), 0x1A (power condition) and 0x2A (capabilities
and mechanical status, which sr's get_capabilities parses byte by byte).
No parameter is changeable, so the "changeable values" form is all zeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from vhba_responder.cdb import be16

if TYPE_CHECKING:
    from vhba_responder.device import Device

ALL_PAGES = 0x3F
# 48x CD (8467 kB/s, the value CDEmu also reports); sr divides by 176 for "48x".
MAX_READ_SPEED_KBPS = 8467
BUFFER_KB = 256


def _error_recovery(dev: Device) -> bytes:
    # Read retry count 1; no write recovery (read-only drive).
    return bytes((0x01, 0x0A, 0x00, 0x01, 0, 0, 0, 0, 0x00, 0, 0, 0))


def _cd_parameters(dev: Device) -> bytes:
    # Inactivity timer "vendor specific" (0), 60 seconds/minute, 75 frames/second.
    return bytes((0x0D, 0x06, 0x00, 0x00)) + be16(60) + be16(75)


def _power_condition(dev: Device) -> bytes:
    # No idle/standby timers: the emulated spindle never spins down.
    return bytes((0x1A, 0x0A, 0x00, 0x00)) + bytes(8)


def _capabilities(dev: Device) -> bytes:
    """Page 0x2A in the MMC-3+ layout with no write-speed descriptors (32 bytes)."""
    speed = dev.state.speed_kbps or MAX_READ_SPEED_KBPS
    page = bytearray(32)
    page[0] = 0x2A
    page[1] = len(page) - 2
    page[2] = 0x08 | 0x02 | 0x01  # reads DVD-ROM, CD-RW, CD-R
    page[3] = 0x00  # writes nothing
    page[4] = 0x40 | 0x01  # multi-session, audio play
    page[5] = 0x10 | 0x02 | 0x01  # C2 pointers, accurate CD-DA stream, CD-DA commands
    lock_state = 0x02 if dev.state.locked else 0x00
    page[6] = (1 << 5) | 0x08 | lock_state | 0x01  # tray loader, eject, lock state, lock
    page[7] = 0x00
    page[8:10] = be16(MAX_READ_SPEED_KBPS)  # maximum read speed (obsolete field, sr reads it)
    page[10:12] = be16(256)  # volume levels, as feature 0x0103 says
    page[12:14] = be16(BUFFER_KB)
    page[14:16] = be16(speed)  # current read speed (obsolete field)
    # 16..27 write speeds / copy management / rotation control: all zero.
    page[30:32] = be16(0)  # number of write speed performance descriptors
    return bytes(page)


PageBuilder = Callable[["Device"], bytes]
PAGES: dict[int, PageBuilder] = {
    0x01: _error_recovery,
    0x0D: _cd_parameters,
    0x1A: _power_condition,
    0x2A: _capabilities,
}


def page_bytes(dev: Device, code: int, changeable: bool = False) -> bytes:
    """One page (header included); ``changeable`` gives the all-zero mask form."""
    page = PAGES[code](dev)
    if changeable:
        return page[:2] + bytes(len(page) - 2)
    return page


def page_length(code: int, dev: Device) -> int:
    return len(PAGES[code](dev))
