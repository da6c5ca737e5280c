"""Sense keys, additional sense codes and the single fixed-format sense encoder.

Handlers never build sense bytes themselves: they raise :class:`SenseError`
with one of the named :class:`Asc` constants, and :func:`encode_fixed` is the
only place that lays out the 18-byte SPC fixed-format sense data.  Keeping one
encoder means the VALID/INFORMATION and SKSV/field-pointer rules are applied
identically everywhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

FIXED_SENSE_LEN = 18
RESPONSE_CODE_CURRENT = 0x70


class SenseKey(enum.IntEnum):
    """SPC sense keys (only the ones this drive can report)."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    ABORTED_COMMAND = 0xB


class Asc(NamedTuple):
    """An ASC/ASCQ pair with the T10 name, so traces and logs stay readable."""

    asc: int
    ascq: int
    name: str


class Ascs:
    """Named ASC/ASCQ constants (SPC-3 / MMC-5 annex)."""

    NO_ADDITIONAL = Asc(0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION")
    BECOMING_READY = Asc(0x04, 0x01, "LOGICAL UNIT IS IN PROCESS OF BECOMING READY")
    UNRECOVERED_READ_ERROR = Asc(0x11, 0x00, "UNRECOVERED READ ERROR")
    PARAMETER_LIST_LENGTH_ERROR = Asc(0x1A, 0x00, "PARAMETER LIST LENGTH ERROR")
    INVALID_OPCODE = Asc(0x20, 0x00, "INVALID COMMAND OPERATION CODE")
    LBA_OUT_OF_RANGE = Asc(0x21, 0x00, "LOGICAL BLOCK ADDRESS OUT OF RANGE")
    INVALID_FIELD_IN_CDB = Asc(0x24, 0x00, "INVALID FIELD IN CDB")
    INVALID_FIELD_IN_PARAMETER_LIST = Asc(0x26, 0x00, "INVALID FIELD IN PARAMETER LIST")
    MEDIUM_MAY_HAVE_CHANGED = Asc(0x28, 0x00, "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED")
    POWER_ON_RESET = Asc(0x29, 0x00, "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED")
    COMMAND_SEQUENCE_ERROR = Asc(0x2C, 0x00, "COMMAND SEQUENCE ERROR")
    INCOMPATIBLE_FORMAT = Asc(0x30, 0x02, "CANNOT READ MEDIUM - INCOMPATIBLE FORMAT")
    SAVING_NOT_SUPPORTED = Asc(0x39, 0x00, "SAVING PARAMETERS NOT SUPPORTED")
    MEDIUM_NOT_PRESENT = Asc(0x3A, 0x00, "MEDIUM NOT PRESENT")
    MEDIUM_NOT_PRESENT_TRAY_CLOSED = Asc(0x3A, 0x01, "MEDIUM NOT PRESENT - TRAY CLOSED")
    MEDIUM_NOT_PRESENT_TRAY_OPEN = Asc(0x3A, 0x02, "MEDIUM NOT PRESENT - TRAY OPEN")
    INTERNAL_TARGET_FAILURE = Asc(0x44, 0x00, "INTERNAL TARGET FAILURE")
    MEDIUM_REMOVAL_PREVENTED = Asc(0x53, 0x02, "MEDIUM REMOVAL PREVENTED")
    ILLEGAL_MODE_FOR_TRACK = Asc(0x64, 0x00, "ILLEGAL MODE FOR THIS TRACK")


@dataclass(frozen=True)
class FieldPointer:
    """Where an invalid field sits: CDB (or parameter list) byte and optional bit."""

    byte: int
    bit: int | None = None
    in_cdb: bool = True


class SenseError(Exception):
    """Raised by command handlers to end a command with CHECK CONDITION.

    ``information`` sets the INFORMATION field and the VALID bit (used for
    LBA-out-of-range and read errors, which Linux sr uses to compute partial
    completion); ``field`` fills the sense-key-specific field pointer.
    """

    def __init__(
        self,
        key: int,
        asc: Asc,
        *,
        information: int | None = None,
        field: FieldPointer | None = None,
        ili: bool = False,
    ) -> None:
        super().__init__(f"{key_name(key)} {asc.asc:02X}/{asc.ascq:02X} {asc.name}")
        self.key = key
        self.asc = asc
        self.information = information
        self.field = field
        self.ili = ili

    @property
    def triple(self) -> str:
        """``KK/AA/QQ`` hex form used in traces."""
        return format_triple(self.key, self.asc.asc, self.asc.ascq)

    def encode(self) -> bytes:
        return encode_fixed(
            self.key,
            self.asc.asc,
            self.asc.ascq,
            information=self.information,
            field=self.field,
            ili=self.ili,
        )


def key_name(key: int) -> str:
    """Name of a sense key, or ``KEY_x`` for the ones this drive never reports itself."""
    try:
        return SenseKey(key).name
    except ValueError:
        return f"KEY_{key:X}"


def illegal_field(byte: int, bit: int | None = None) -> SenseError:
    """Shorthand for ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at a byte."""
    return SenseError(
        SenseKey.ILLEGAL_REQUEST, Ascs.INVALID_FIELD_IN_CDB, field=FieldPointer(byte, bit)
    )


def illegal_param(byte: int, bit: int | None = None) -> SenseError:
    """ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing at a byte."""
    return SenseError(
        SenseKey.ILLEGAL_REQUEST,
        Ascs.INVALID_FIELD_IN_PARAMETER_LIST,
        field=FieldPointer(byte, bit, in_cdb=False),
    )


def format_triple(key: int, asc: int, ascq: int) -> str:
    return f"{key:02X}/{asc:02X}/{ascq:02X}"


def encode_fixed(
    key: int,
    asc: int,
    ascq: int,
    *,
    information: int | None = None,
    field: FieldPointer | None = None,
    ili: bool = False,
) -> bytes:
    """Build 18 bytes of SPC fixed-format current sense data (response code 0x70)."""
    out = bytearray(FIXED_SENSE_LEN)
    out[0] = RESPONSE_CODE_CURRENT
    if information is not None:
        out[0] |= 0x80  # VALID: INFORMATION is meaningful
        out[3:7] = (information & 0xFFFFFFFF).to_bytes(4, "big")
    out[2] = (key & 0x0F) | (0x20 if ili else 0)
    out[7] = FIXED_SENSE_LEN - 8  # additional sense length
    out[12] = asc
    out[13] = ascq
    if field is not None:
        sks = 0x80  # SKSV
        if field.in_cdb:
            sks |= 0x40  # C/D: the error is in the CDB
        if field.bit is not None:
            sks |= 0x08 | (field.bit & 0x07)  # BPV + bit pointer
        out[15] = sks
        out[16:18] = field.byte.to_bytes(2, "big")
    return bytes(out)


@dataclass(frozen=True)
class DecodedSense:
    """The fields of fixed-format sense a test or a log line cares about."""

    key: int
    asc: int
    ascq: int
    valid: bool
    information: int

    @property
    def triple(self) -> str:
        return format_triple(self.key, self.asc, self.ascq)


def decode_fixed(data: bytes) -> DecodedSense:
    """Parse fixed-format sense (for traces, the REQUEST SENSE path and tests)."""
    if len(data) < 14 or (data[0] & 0x7F) not in (0x70, 0x71):
        raise ValueError(f"not fixed-format sense data: {data[:4].hex()}")
    return DecodedSense(
        key=data[2] & 0x0F,
        asc=data[12],
        ascq=data[13],
        valid=bool(data[0] & 0x80),
        information=int.from_bytes(data[3:7], "big"),
    )
