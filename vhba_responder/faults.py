"""Fault injection: a tiny spec language and the per-device set of active faults.

A spec is ``KIND[:key=value,...]``, for example ``delay:ms=500,op=0x28``.
Faults let the lab prove that its suite notices a misbehaving drive (a wrong
capacity, a short transfer, a hung command...), so every fault here maps to a
concrete way a real drive or responder can go wrong.

Kinds and keys (``op`` restricts any fault to one opcode; ``count`` makes it
expire after N hits; ``dev`` is only meaningful on the ``serve --fault`` line):

* ``delay:ms=N``            answer after N milliseconds
* ``hang``                  never answer (the kernel times out and aborts)
* ``sense:key=K,asc=A,ascq=Q[,lba=A-B][,info=first|start]``
                            fail with this sense; with ``lba`` only commands whose
                            block range overlaps A-B fail; INFORMATION holds the
                            first bad LBA (``first``) or the command's start LBA
* ``short:bytes=N``         return only N bytes of data-in
* ``capacity:blocks=N``     READ CAPACITY reports N blocks (a deliberately broken drive)
* ``die``                   exit the whole responder at once (``os._exit``)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from vhba_responder.sense import Asc, SenseError

KINDS = ("delay", "hang", "sense", "short", "capacity", "die")
_ALLOWED_KEYS = {
    "delay": {"ms"},
    "hang": set(),
    "sense": {"key", "asc", "ascq", "lba", "info"},
    "short": {"bytes"},
    "capacity": {"blocks"},
    "die": set(),
}
_COMMON_KEYS = {"op", "count", "dev"}
_REQUIRED_KEYS = {
    "delay": {"ms"},
    "sense": {"key", "asc"},
    "short": {"bytes"},
    "capacity": {"blocks"},
}


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed; the message names the bad part."""


@dataclass
class Fault:
    """One parsed fault; ``remaining`` counts down when ``count`` was given."""

    kind: str
    spec: str
    op: int | None = None
    dev: int | None = None
    remaining: int | None = None
    ms: int = 0
    nbytes: int = 0
    blocks: int = 0
    key: int = 0
    asc: int = 0
    ascq: int = 0
    lba_first: int | None = None
    lba_last: int | None = None
    info_start: bool = False

    def matches_op(self, opcode: int) -> bool:
        return self.op is None or self.op == opcode

    def overlaps(self, lba_range: tuple[int, int] | None) -> bool:
        """True if the fault has no LBA filter or ``[start, end)`` overlaps it."""
        if self.lba_first is None or self.lba_last is None:
            return True
        if lba_range is None:
            return False
        start, end = lba_range
        return start <= self.lba_last and end > self.lba_first

    def to_json(self) -> dict[str, object]:
        return {"spec": self.spec, "remaining": self.remaining}


def _int(value: str, what: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise FaultSpecError(
            f"{what}: expected an integer (decimal or 0x..), got {value!r}"
        ) from None


def parse_fault(spec: str) -> Fault:
    """Parse one spec string into a :class:`Fault` (raises :class:`FaultSpecError`)."""
    text = spec.strip()
    if not text:
        raise FaultSpecError("empty fault spec")
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise FaultSpecError(f"unknown fault kind {kind!r} (known: {', '.join(KINDS)})")
    values: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not value.strip():
            raise FaultSpecError(f"{kind}: {item!r} is not key=value")
        if key not in _ALLOWED_KEYS[kind] | _COMMON_KEYS:
            allowed = sorted(_ALLOWED_KEYS[kind] | _COMMON_KEYS)
            raise FaultSpecError(f"{kind}: unknown key {key!r} (allowed: {', '.join(allowed)})")
        if key in values:
            raise FaultSpecError(f"{kind}: key {key!r} given twice")
        values[key] = value.strip()
    missing = _REQUIRED_KEYS.get(kind, set()) - values.keys()
    if missing:
        raise FaultSpecError(f"{kind}: missing {', '.join(sorted(missing))}")

    fault = Fault(kind=kind, spec=text)
    if "op" in values:
        fault.op = _int(values["op"], "op")
        if not 0 <= fault.op <= 0xFF:
            raise FaultSpecError(f"op: {fault.op:#x} is not an opcode (0..0xff)")
    if "dev" in values:
        fault.dev = _int(values["dev"], "dev")
    if "count" in values:
        fault.remaining = _int(values["count"], "count")
        if fault.remaining < 1:
            raise FaultSpecError("count: must be >= 1")
    if kind == "delay":
        fault.ms = _int(values["ms"], "ms")
        if fault.ms < 0:
            raise FaultSpecError("ms: must be >= 0")
    elif kind == "short":
        fault.nbytes = _int(values["bytes"], "bytes")
        if fault.nbytes < 0:
            raise FaultSpecError("bytes: must be >= 0")
    elif kind == "capacity":
        fault.blocks = _int(values["blocks"], "blocks")
        if not 0 <= fault.blocks <= 0x1_0000_0000:
            raise FaultSpecError("blocks: must fit READ CAPACITY(10) (0..2^32)")
    elif kind == "sense":
        fault.key = _int(values["key"], "key")
        fault.asc = _int(values["asc"], "asc")
        fault.ascq = _int(values.get("ascq", "0"), "ascq")
        if not 0 <= fault.key <= 0xF:
            raise FaultSpecError("key: sense key must be 0..15")
        if not (0 <= fault.asc <= 0xFF and 0 <= fault.ascq <= 0xFF):
            raise FaultSpecError("asc/ascq: must be 0..0xff")
        if "lba" in values:
            first_s, dash, last_s = values["lba"].partition("-")
            fault.lba_first = _int(first_s, "lba")
            fault.lba_last = _int(last_s, "lba") if dash else fault.lba_first
            if fault.lba_last < fault.lba_first:
                raise FaultSpecError("lba: range end before start")
        info = values.get("info", "first").lower()
        if info not in ("first", "start"):
            raise FaultSpecError("info: must be 'first' or 'start'")
        fault.info_start = info == "start"
    return fault


@dataclass
class FaultSet:
    """The faults active on one device.  Thread-safe: workers consult it concurrently."""

    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Called after a fault is added (outside the lock): the device turns direct reads off.
    on_add: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return bool(self._faults)

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)
        if self.on_add is not None:
            self.on_add()

    def clear(self) -> int:
        with self._lock:
            n = len(self._faults)
            self._faults.clear()
            return n

    def snapshot(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def _take(self, kinds: tuple[str, ...], opcode: int, lba_range=None) -> Fault | None:
        """Find the first matching fault and consume one use of it."""
        if not self._faults:  # the common case: no lock taken per command
            return None
        with self._lock:
            for f in self._faults:
                if f.kind in kinds and f.matches_op(opcode) and f.overlaps(lba_range):
                    if f.remaining is not None:
                        f.remaining -= 1
                        if f.remaining <= 0:
                            self._faults.remove(f)
                    return f
        return None

    def timing(self, opcode: int) -> Fault | None:
        """A delay, hang or die fault for this command (used by the transport)."""
        return self._take(("die", "hang", "delay"), opcode)

    def sense_error(self, opcode: int, lba_range: tuple[int, int] | None) -> SenseError | None:
        f = self._take(("sense",), opcode, lba_range)
        if f is None:
            return None
        info = None
        if f.lba_first is not None and lba_range is not None:
            info = lba_range[0] if f.info_start else max(lba_range[0], f.lba_first)
        asc = Asc(f.asc, f.ascq, f"injected ({f.spec})")
        return SenseError(f.key, asc, information=info)

    def short_length(self, opcode: int) -> int | None:
        f = self._take(("short",), opcode)
        return None if f is None else f.nbytes

    def capacity_blocks(self, opcode: int) -> int | None:
        f = self._take(("capacity",), opcode)
        return None if f is None else f.blocks
