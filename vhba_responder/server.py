"""Serving devices on control fds: one reader thread per fd, a shared worker pool.

Threading model (why it looks like this):

* A reader thread per fd polls for POLLIN (with a short timeout so it notices
  a stop request), reads one request non-blocking and hands it to the pool.
  A read that returns EAGAIN right after POLLIN is simply retried.
* Workers execute commands and write responses themselves.  vhba matches
  responses by tag and write() never blocks, so answers may go out in any
  order: a slow image read or an injected delay on one command does not hold
  back TEST UNIT READY or GESN polling on the same drive.
* Stopping sets an event (which also cuts injected delays short), joins the
  readers, drains the pool and only then closes the fds, so no worker writes
  to a recycled descriptor.  The kernel fails whatever was left unanswered.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vhba_responder.device import Device, Response
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


@dataclass
class Endpoint:
    """One served fd and the drive behind it."""

    device: Device
    fd: int
    address: Address | None = None
    thread: threading.Thread | None = field(default=None, repr=False)
    commands: int = 0
    # Upstream vhba copies every response through one unlocked per-fd buffer, so
    # concurrent writes on one fd corrupt data there: one write at a time per fd.
    write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self) -> dict[str, object]:
        return {
            "index": self.device.index,
            "devnum": self.device.devnum,
            "hctl": str(self.address) if self.address else None,
        }


class Server:
    """Runs the reader threads and the worker pool for any number of fds."""

    def __init__(self, trace: TraceWriter | None = None, workers: int = 8) -> None:
        self.trace = trace or TraceWriter(None)
        self.endpoints: list[Endpoint] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vhba-worker")
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def add(self, fd: int, device: Device, address: Address | None = None) -> Endpoint:
        """Start serving ``fd`` immediately (the kernel's INQUIRY may already be queued)."""
        ep = Endpoint(device, fd, address)
        ep.thread = threading.Thread(
            target=self._reader, args=(ep,), name=f"vhba-reader-{device.index}", daemon=True
        )
        with self._lock:
            self.endpoints.append(ep)
        ep.thread.start()
        return ep

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading, finish in-flight commands, close every fd."""
        self._stop.set()
        for ep in self.endpoints:
            if ep.thread is not None:
                ep.thread.join(timeout)
        self._pool.shutdown(wait=True)
        for ep in self.endpoints:
            try:
                os.close(ep.fd)
            except OSError as exc:
                log.warning("dev %d: close: %s", ep.device.index, exc)
        self.trace.close()

    # ---------------------------------------------------------------- readers
    def _reader(self, ep: Endpoint) -> None:
        poller = select.poll()
        poller.register(ep.fd, select.POLLIN)
        buf = bytearray(READ_BUFFER)  # reused: one request per read()
        while not self._stop.is_set():
            try:
                ready = poller.poll(POLL_INTERVAL_MS)
            except InterruptedError:
                continue
            if not ready:
                continue
            if ready[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                log.error(
                    "dev %d: control fd reported %#x; reader stops", ep.device.index, ready[0][1]
                )
                return
            try:
                req = read_request(ep.fd, buf)
            except OSError as exc:
                log.error("dev %d: read failed: %s", ep.device.index, exc)
                if self._stop.wait(0.1):
                    return
                continue
            except ValueError as exc:
                log.error("dev %d: %s", ep.device.index, exc)
                continue
            if req is None:
                continue
            ep.commands += 1
            try:
                self._pool.submit(self._handle, ep, req)
            except RuntimeError:  # pool already shut down: we are stopping
                return

    # ---------------------------------------------------------------- workers
    def _handle(self, ep: Endpoint, req: Request) -> None:
        dev = ep.device
        t0 = time.time()
        start = time.monotonic()
        fault = dev.faults.timing(req.cdb[0])
        if fault is not None:
            if fault.kind == "die":
                log.critical("dev %d: fault %r: exiting now", dev.index, fault.spec)
                logging.shutdown()
                os._exit(DIE_EXIT_CODE)
            if fault.kind == "hang":
                log.warning(
                    "dev %d: fault %r: not answering tag %d (cdb %s)",
                    dev.index,
                    fault.spec,
                    req.tag,
                    req.cdb.hex(),
                )
                self.trace.write(self._hang_record(t0, dev, req))
                return
            if self._stop.wait(fault.ms / 1000.0):
                return  # stopping: leave it to the kernel to fail the command
        resp = dev.execute(req.cdb, req.data_out, req.data_len)
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
