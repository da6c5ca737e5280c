"""Serving devices on control fds: a few threads per fd, leader/follower style.

Threading model (why it looks like this):

* Each fd has a small team of threads.  One of them, the leader, waits in
  poll() for POLLIN (with a short timeout so it notices a stop request) and
  reads one request non-blocking, then runs it itself: no request ever waits
  for another thread to wake up before it executes.  Under TCG a thread
  hand-off costs more than a whole READ(10) (bench/README.md).
* The leader passes leadership on only when the command may block: an image
  read the page cache cannot serve (RWF_NOWAIT says so), or an injected
  delay or hang.  Then the next thread polls while this one waits, so TEST
  UNIT READY and GESN polling are answered meanwhile; vhba matches responses
  by tag and write() never blocks, so answers may go out in any order.
  Commands that cannot block wake nobody.
* Plain reads usually never get here: the drive lets our module serve them
  from the image itself (:mod:`vhba_responder.direct`), except while a
  trace is written, which must see every command.
* Stopping sets an event (which also cuts injected delays short), joins the
  threads and only then closes the fds, so nothing writes to a recycled
  descriptor.  The kernel fails whatever was left unanswered.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from dataclasses import dataclass, field

from vhba_responder.device import Device, Response
from vhba_responder.direct import DirectReads
from vhba_responder.protocol import (
    READ_BUFFER,
    Address,
    Request,
    read_request,
    write_response,
)
from vhba_responder.trace import TraceWriter, trace_record

log = logging.getLogger(__name__)

POLL_INTERVAL_MS = 200
DIE_EXIT_CODE = 70
DEFAULT_THREADS = 4
# READ(10) and READ(12): the commands the module's direct reads take off the responder.
DIRECT_READ_OPCODES = frozenset((0x28, 0xA8))


@dataclass
class Endpoint:
    """One served fd and the drive behind it."""

    device: Device
    fd: int
    address: Address | None = None
    threads: list[threading.Thread] = field(default_factory=list, repr=False)
    commands: int = 0  # requests read so far (shown by `ctl status`)
    # READ(10)/READ(12) among them: the media polling a kernel does meanwhile
    # (GET EVENT STATUS, TEST UNIT READY) says nothing about direct reads.
    reads: int = 0
    closed: bool = False  # the fd reported an error or hang-up: its threads stop
    # Only the leader waits for and reads requests.
    leader: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Upstream vhba copies every response through one unlocked per-fd buffer, so
    # concurrent writes on one fd corrupt data there: one write at a time per fd.
    write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self) -> dict[str, object]:
        return {
            "index": self.device.index,
            "devnum": self.device.devnum,
            "hctl": str(self.address) if self.address else None,
            "commands": self.commands,
            "reads": self.reads,
        }


class _Handoff:
    """Gives up the drive's leadership at most once, before the command may block."""

    __slots__ = ("_lock", "released")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.released = False

    def __call__(self) -> None:
        if not self.released:
            self.released = True
            self._lock.release()


class Server:
    """Serves any number of fds, ``threads`` threads each."""

    def __init__(
        self,
        trace: TraceWriter | None = None,
        threads: int = DEFAULT_THREADS,
        direct_reads: bool = True,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads per drive must be >= 1, got {threads}")
        self.trace = trace or TraceWriter(None)
        self.threads = threads
        self.direct_reads = direct_reads and not self.trace.enabled
        self.endpoints: list[Endpoint] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def add(self, fd: int, device: Device, address: Address | None = None) -> Endpoint:
        """Start serving ``fd`` immediately (the kernel's INQUIRY may already be queued)."""
        ep = Endpoint(device, fd, address)
        ep.threads = [
            threading.Thread(
                target=self._serve, args=(ep,), name=f"vhba-{device.index}.{i}", daemon=True
            )
            for i in range(self.threads)
        ]
        with self._lock:
            self.endpoints.append(ep)
        for thread in ep.threads:
            thread.start()
        if self.direct_reads:
            device.attach_direct_reads(DirectReads(fd))
        return ep

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading, finish in-flight commands, close every fd."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for ep in self.endpoints:
            for thread in ep.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        for ep in self.endpoints:
            try:
                os.close(ep.fd)
            except OSError as exc:
                log.warning("dev %d: close: %s", ep.device.index, exc)
        self.trace.close()

    # ---------------------------------------------------------------- threads
    def _serve(self, ep: Endpoint) -> None:
        poller = select.poll()
        poller.register(ep.fd, select.POLLIN)
        buf = bytearray(READ_BUFFER)  # this thread's: one request per read()
        ep.leader.acquire()
        while True:
            req = self._next_request(ep, poller, buf)
            if req is None:
                ep.leader.release()
                return
            handoff = _Handoff(ep.leader)
            try:
                self._handle(ep, req, handoff)
            except Exception:  # a bug must not leave the drive without a leader
                log.exception("dev %d: serving tag %d failed", ep.device.index, req.tag)
            if handoff.released:
                ep.leader.acquire()  # back in line as a follower

    def _next_request(self, ep: Endpoint, poller: select.poll, buf: bytearray) -> Request | None:
        """As leader: wait for and read one request; None once stopping or closed."""
        while not (self._stop.is_set() or ep.closed):
            try:
                ready = poller.poll(POLL_INTERVAL_MS)
            except InterruptedError:
                continue
            if not ready:
                continue
            if ready[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                log.error(
                    "dev %d: control fd reported %#x; serving stops", ep.device.index, ready[0][1]
                )
                ep.closed = True
                return None
            try:
                req = read_request(ep.fd, buf)
            except OSError as exc:
                log.error("dev %d: read failed: %s", ep.device.index, exc)
                if self._stop.wait(0.1):
                    return None
                continue
            except ValueError as exc:
                log.error("dev %d: %s", ep.device.index, exc)
                continue
            if req is not None:
                ep.commands += 1
                if req.cdb[:1] and req.cdb[0] in DIRECT_READ_OPCODES:
                    ep.reads += 1
                return req
        return None

    def _handle(self, ep: Endpoint, req: Request, handoff: _Handoff) -> None:
        dev = ep.device
        tracing = self.trace.enabled
        t0 = time.time() if tracing else 0.0
        start = time.monotonic() if tracing else 0.0
        fault = dev.faults.timing(req.cdb[0])
        if fault is not None:
            if fault.kind == "die":
                log.critical("dev %d: fault %r: exiting now", dev.index, fault.spec)
                logging.shutdown()
                os._exit(DIE_EXIT_CODE)
            handoff()
            if fault.kind == "hang":
                log.warning(
                    "dev %d: fault %r: not answering tag %d (cdb %s)",
                    dev.index,
                    fault.spec,
                    req.tag,
                    req.cdb.hex(),
                )
                if tracing:
                    self.trace.write(self._hang_record(t0, dev, req))
                return
            if self._stop.wait(fault.ms / 1000.0):
                return  # stopping: leave it to the kernel to fail the command
        resp = dev.execute(req.cdb, req.data_out, req.data_len, before_block=handoff)
        try:
            with ep.write_lock:
                write_response(ep.fd, req.tag, resp.status, resp.payload)
        except OSError as exc:
            # EIO: the kernel aborted this tag meanwhile; EBADF: we are closing.
            log.warning(
                "dev %d: response for tag %d (%s) not delivered: %s",
                dev.index,
                req.tag,
                resp.name,
                exc,
            )
        if resp.status:
            log.debug("dev %d: %s -> %s", dev.index, resp.name, resp.sense_text)
        if tracing:
            self.trace.write(
                trace_record(t0, dev.index, req.cdb, req.data_len, resp, time.monotonic() - start)
            )

    @staticmethod
    def _hang_record(t0: float, dev: Device, req: Request) -> dict[str, object]:
        spec = dev.table.get(req.cdb[0])
        rec = trace_record(
            t0,
            dev.index,
            req.cdb,
            req.data_len,
            Response(0, name=spec.name if spec else f"OPCODE {req.cdb[0]:#04x}"),
            0,
        )
        rec["status"] = None
        return rec
