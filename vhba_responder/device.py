"""The drive model: media state, unit attentions, and the table-driven dispatcher.

``Device.execute`` is pure with respect to the transport: it takes CDB bytes
(and data-out bytes) and returns a :class:`Response`.  The generic checks run
here, in this order, before any handler sees the command:

1. unknown opcode -> ILLEGAL REQUEST 20/00; CDB shorter than the opcode needs -> 24/00
2. pending UNIT ATTENTION -> reported (and cleared) unless the row allows it
3. injected ``sense`` faults
4. NOT READY 3A/01 (tray closed) or 3A/02 (tray open) for rows that need a disc

Unit attention policy: no power-on 29/00 (a freshly added SCSI device has no
history to report, and every command Linux sends before sr's first "eat unit
attentions" TUR would otherwise fail); a 28/00 is raised exactly once after a
disc becomes accessible (control ``load`` or START STOP UNIT closing the tray
on a disc).  The same change is posted as a GESN media event, so the kernel's
GESN-then-TUR check sees a consistent story.

Direct reads (:mod:`vhba_responder.direct`): every change that could make a
READ's answer differ from the image bytes (disc in or out, tray, a unit
attention, an injected fault) turns them off first, under the device lock;
``execute`` turns them back on once nothing stands in the way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from vhba_responder.audioplay import AudioPlayer
from vhba_responder.cdb import Cdb
from vhba_responder.commands import block, mmc, spc
from vhba_responder.commands.base import CommandSpec, Context, Flag
from vhba_responder.direct import DirectReads, Mapping
from vhba_responder.faults import FaultSet
from vhba_responder.media import BLOCK_SIZE, PROFILE_NONE, BeforeBlock, Medium
from vhba_responder.sense import (
    Asc,
    Ascs,
    FieldPointer,
    SenseError,
    SenseKey,
    decode_fixed,
)

log = logging.getLogger(__name__)

GOOD = 0x00
CHECK_CONDITION = 0x02

# GESN media event codes (MMC-5 table "Media Event Format").
MEDIA_EVENT_NONE = 0
MEDIA_EVENT_EJECT_REQUEST = 1
MEDIA_EVENT_NEW_MEDIA = 2
MEDIA_EVENT_MEDIA_REMOVAL = 3


def _build_table() -> dict[int, CommandSpec]:
    table: dict[int, CommandSpec] = {}
    for row in (*spc.COMMANDS, *block.COMMANDS, *mmc.COMMANDS):
        if row.opcode in table:
            raise RuntimeError(f"opcode {row.opcode:#04x} defined twice")
        table[row.opcode] = row
    return table


COMMAND_TABLE: dict[int, CommandSpec] = _build_table()


@dataclass(frozen=True)
class Identity:
    """INQUIRY strings (space-padded to their field widths when encoded)."""

    vendor: str = "VHBALAB"
    product: str = "Virtual CD/DVD"
    revision: str = "0.1"
    serial: str = "000"


@dataclass(frozen=True)
class Response:
    """What the transport sends back: status, data-in (GOOD) or sense (CHECK CONDITION)."""

    status: int
    data: bytes = b""
    sense: bytes = b""
    name: str = ""

    @property
    def payload(self) -> bytes:
        return self.data if self.status == GOOD else self.sense

    @property
    def sense_text(self) -> str | None:
        """``KK/AA/QQ`` or None (the trace format)."""
        return decode_fixed(self.sense).triple if self.sense else None


@dataclass
class DriveState:
    """Mutable drive state; every access holds ``Device.lock``."""

    medium: Medium | None = None  # the disc in the drive (on the tray while it is open)
    tray_open: bool = False
    locked: bool = False  # PREVENT ALLOW MEDIUM REMOVAL
    pending_ua: Asc | None = None
    media_event: int = MEDIA_EVENT_NONE  # one pending GESN media event (latest wins)
    last_sense: bytes | None = None
    speed_kbps: int = 0  # SET CD SPEED, 0 = maximum
    audio: AudioPlayer = field(default_factory=AudioPlayer)  # PLAY AUDIO and its position


@dataclass
class Device:
    """One emulated CD/DVD-ROM drive (one vhba fd).  Thread-safe."""

    index: int = 0
    devnum: int = 0
    identity: Identity = field(default_factory=Identity)
    faults: FaultSet = field(default_factory=FaultSet)
    state: DriveState = field(default_factory=DriveState)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    table: dict[int, CommandSpec] = field(default_factory=lambda: COMMAND_TABLE, repr=False)
    direct: DirectReads | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.faults.on_add = self._refresh_direct

    # ----------------------------------------------------------- direct reads
    def attach_direct_reads(self, direct: DirectReads) -> None:
        """Let the module behind ``direct`` serve plain reads whenever that is safe."""
        with self.lock:
            self.direct = direct
            self._refresh_direct()

    def _direct_mapping(self) -> Mapping | None:
        """What the module may serve now: the image, if reads would return just its bytes."""
        medium = self.accessible_medium
        if medium is None or self.state.pending_ua is not None or self.faults.active:
            return None
        fileno = getattr(medium.source, "fileno", None)
        if fileno is None or medium.blocks == 0:
            return None
        return Mapping(medium.source, fileno(), medium.blocks, BLOCK_SIZE)

    def _refresh_direct(self) -> None:
        """Tell the module the current mapping; returns once it is in effect."""
        if self.direct is not None:
            with self.lock:
                self.direct.set(self._direct_mapping())

    # ------------------------------------------------------------------ media
    @property
    def accessible_medium(self) -> Medium | None:
        """The disc commands can read: present and tray closed."""
        s = self.state
        return None if s.tray_open else s.medium

    @property
    def current_profile(self) -> int:
        m = self.accessible_medium
        return m.kind.profile if m else PROFILE_NONE

    def not_ready_error(self) -> SenseError:
        asc = (
            Ascs.MEDIUM_NOT_PRESENT_TRAY_OPEN
            if self.state.tray_open
            else Ascs.MEDIUM_NOT_PRESENT_TRAY_CLOSED
        )
        return SenseError(SenseKey.NOT_READY, asc)

    def _became_accessible(self) -> None:
        self.state.audio = AudioPlayer()  # a new disc: nothing played yet, head at LBA 0
        self.state.pending_ua = Ascs.MEDIUM_MAY_HAVE_CHANGED
        self.state.media_event = MEDIA_EVENT_NEW_MEDIA
        self._refresh_direct()

    def _became_inaccessible(self) -> None:
        # No UA for a removal: TUR turning into NOT READY 3A tells Linux already,
        # and a stale 28/00 would make sr think a new disc arrived.
        self.state.pending_ua = None
        self.state.audio.stop()
        self.state.media_event = MEDIA_EVENT_MEDIA_REMOVAL
        self._refresh_direct()

    def load(self, medium: Medium, wait_s: float = 0.0) -> None:
        """Operator puts a disc in and closes the tray (control ``load``).

        Replacing a disc the host has locked goes through the same eject
        request as :meth:`eject` (the operator must get the old disc out first).
        """
        with self._unlocked_or_request(wait_s, force=False, need_disc=True):
            self.state.medium = medium
            self.state.tray_open = False
            self._became_accessible()
            log.info(
                "dev %d: loaded %s (%s, %d blocks)",
                self.index,
                medium.label,
                medium.kind.value,
                medium.blocks,
            )

    def eject(self, force: bool = False, wait_s: float = 0.0) -> None:
        """Operator presses eject and takes the disc (control ``eject``).

        While the tray is locked a real drive only reports an eject request
        to the host.  On a systemd guest udev answers that request itself
        (``cdrom_id --eject-media``: unlock, then START STOP eject), and udev
        locks every loaded disc, so the request is posted and the host gets
        ``wait_s`` seconds to release the lock before the eject is refused.
        ``force`` ignores the lock (and clears it).
        """
        with self._unlocked_or_request(wait_s, force=force, need_disc=False):
            had_disc = self.accessible_medium is not None
            self.state.medium = None
            self.state.tray_open = True
            self.state.locked = False
            if had_disc:
                self._became_inaccessible()
            log.info("dev %d: ejected", self.index)

    @contextlib.contextmanager
    def _unlocked_or_request(self, wait_s: float, force: bool, need_disc: bool) -> Iterator[None]:
        """Hold the device lock once the tray may be operated by hand.

        If the host keeps the tray locked (and, with ``need_disc``, a disc is
        in), post an eject request and poll for up to ``wait_s`` seconds.
        """
        deadline = time.monotonic() + wait_s
        posted = False
        while True:
            with self.lock:
                blocked = self.state.locked and not force
                if need_disc and self.accessible_medium is None:
                    blocked = False
                if not blocked:
                    yield
                    return
                if not posted:
                    self.state.media_event = MEDIA_EVENT_EJECT_REQUEST
                    posted = True
            if time.monotonic() >= deadline:
                raise SenseError(SenseKey.NOT_READY, Ascs.MEDIUM_REMOVAL_PREVENTED)
            time.sleep(0.05)

    def open_tray(self) -> None:
        """START STOP UNIT LoEj=1 Start=0: the disc stays on the open tray."""
        if self.state.locked:
            raise SenseError(SenseKey.NOT_READY, Ascs.MEDIUM_REMOVAL_PREVENTED)
        if self.state.tray_open:
            return
        had_disc = self.accessible_medium is not None
        self.state.tray_open = True
        if had_disc:
            self._became_inaccessible()

    def close_tray(self) -> None:
        """START STOP UNIT LoEj=1 Start=1: closing on a disc makes it accessible."""
        if not self.state.tray_open:
            return
        self.state.tray_open = False
        if self.state.medium is not None:
            self._became_accessible()

    def take_media_event(self) -> int:
        event, self.state.media_event = self.state.media_event, MEDIA_EVENT_NONE
        return event

    def status(self) -> dict[str, object]:
        with self.lock:
            s = self.state
            m = s.medium
            return {
                "index": self.index,
                "devnum": self.devnum,
                "medium": m.label if m else None,
                "kind": m.kind.value if m else None,
                "blocks": m.blocks if m else 0,
                "tray_open": s.tray_open,
                "locked": s.locked,
                "profile": self.current_profile,
                "unit_attention_pending": s.pending_ua is not None,
                "direct_reads": self.direct.state if self.direct else "off",
                "faults": [f.to_json() for f in self.faults.snapshot()],
            }

    # --------------------------------------------------------------- dispatch
    def execute(
        self,
        cdb: bytes,
        data_out: bytes = b"",
        alloc_len: int | None = None,
        before_block: BeforeBlock = None,
    ) -> Response:
        """Run one CDB.  ``alloc_len`` is the transport's data-in buffer size;
        ``before_block`` is called before an image read that may wait for storage."""
        c = Cdb.of(cdb)
        spec = self.table.get(c.opcode)
        name = spec.name if spec else f"OPCODE {c.opcode:#04x}"
        direct = self.direct
        if direct is not None and direct.current is None and direct.supported:
            self._refresh_direct()  # e.g. the unit attention was reported, or faults ran out
        try:
            data = self._dispatch(c, len(cdb), spec, data_out, before_block)
        except SenseError as err:
            sense = err.encode()
            with self.lock:
                self.state.last_sense = sense
            return Response(CHECK_CONDITION, sense=sense, name=name)
        if spec is not None and spec.alloc is not None:
            data = data[: spec.alloc.get(c)]
        if alloc_len is not None:
            data = data[:alloc_len]
        short = self.faults.short_length(c.opcode) if data else None
        if short is not None:
            data = data[:short]
        return Response(GOOD, data=data, name=name)

    def _dispatch(
        self,
        c: Cdb,
        cdb_len: int,
        spec: CommandSpec | None,
        data_out: bytes,
        before_block: BeforeBlock,
    ) -> bytes:
        if spec is None:
            raise SenseError(SenseKey.ILLEGAL_REQUEST, Ascs.INVALID_OPCODE, field=FieldPointer(0))
        if cdb_len < spec.cdb_len:
            raise SenseError(
                SenseKey.ILLEGAL_REQUEST, Ascs.INVALID_FIELD_IN_CDB, field=FieldPointer(0)
            )
        with self.lock:
            if self.state.pending_ua is not None and not spec.flags & Flag.ALLOW_UA:
                ua, self.state.pending_ua = self.state.pending_ua, None
                raise SenseError(SenseKey.UNIT_ATTENTION, ua)
            injected = self.faults.sense_error(c.opcode, spec.blocks.of(c) if spec.blocks else None)
            if injected is not None:
                raise injected
            medium = self.accessible_medium
            if spec.flags & Flag.NEEDS_MEDIUM and medium is None:
                raise self.not_ready_error()
            ctx = Context(self, c, data_out, medium, spec, before_block)
            if not spec.flags & Flag.UNLOCKED:
                return self._run(spec, ctx)
        return self._run(spec, ctx)

    def _run(self, spec: CommandSpec, ctx: Context) -> bytes:
        try:
            return spec.handler(ctx)
        except SenseError:
            raise
        except OSError as exc:
            log.error("dev %d: %s: image read failed: %s", self.index, spec.name, exc)
            raise SenseError(SenseKey.MEDIUM_ERROR, Ascs.UNRECOVERED_READ_ERROR) from exc
        except Exception as exc:
            log.exception("dev %d: %s handler crashed", self.index, spec.name)
            raise SenseError(SenseKey.HARDWARE_ERROR, Ascs.INTERNAL_TARGET_FAILURE) from exc
