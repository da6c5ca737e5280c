"""The serve loop against a fake kernel: a SOCK_SEQPACKET pair keeps vhba's
one-request-per-read / one-response-per-write framing."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time

import pytest

from vhba_responder.device import Device
from vhba_responder.faults import parse_fault
from vhba_responder.media import Medium
from vhba_responder.protocol import Request, unpack_response
from vhba_responder.server import Server
from vhba_responder.trace import TRACE_KEYS, TraceWriter


class FakeKernel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, tag: int, cdb: bytes, data_len: int, data_out: bytes = b"") -> None:
        self.sock.send(Request(tag, 0, cdb, data_len, data_out).pack())

    def recv(self, timeout: float = 5.0) -> tuple[int, int, bytes]:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            raise TimeoutError("no response")
        return unpack_response(self.sock.recv(1 << 20))


@contextlib.contextmanager
def serving(iso_path, threads: int, trace_path=None, fault: str | None = None):
    """One drive with ``iso_path`` loaded, served on a socketpair; yields (kernel, dev, server)."""
    kernel_side, responder_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = responder_side.detach()
    os.set_blocking(fd, False)
    dev = Device(index=0, devnum=0)
    dev.state.medium = Medium.open(iso_path)
    if fault:
        dev.faults.add(parse_fault(fault))
    server = Server(TraceWriter(trace_path), threads=threads)
    server.add(fd, dev)
    try:
        yield FakeKernel(kernel_side), dev, server
    finally:
        if not server.stopping:
            server.stop()
        kernel_side.close()


@pytest.fixture
def served(tmp_path, iso):
    trace_path = tmp_path / "trace.jsonl"
    with serving(iso.path, 2, trace_path) as (kernel, dev, server):
        yield kernel, dev, server, trace_path


def _trace(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_inquiry_roundtrip(served):
    k, _, _, _ = served
    k.send(5, bytes([0x12, 0, 0, 0, 96, 0]), 96)
    tag, status, data = k.recv()
    assert (tag, status, len(data)) == (5, 0, 96)
    assert data[8:16] == b"VHBALAB "


def test_status_counts_commands(served):
    k, _, server, _ = served
    for tag in range(3):
        k.send(tag, bytes(6), 0)
        k.recv()
    assert server.endpoints[0].describe()["commands"] == 3


def test_status_counts_reads_apart_from_other_commands(served):
    k, _, server, _ = served
    k.send(1, bytes(6), 0)  # TEST UNIT READY
    k.recv()
    for tag, cdb in ((2, bytes([0x28, 0, 0, 0, 0, 16, 0, 0, 1, 0])),
                     (3, bytes([0xA8, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0]))):  # fmt: skip
        k.send(tag, cdb, 2048)
        k.recv()
    status = server.endpoints[0].describe()
    assert (status["commands"], status["reads"]) == (3, 2)


def test_check_condition_carries_sense(served):
    k, _, _, _ = served
    k.send(9, bytes([0xF7, 0, 0, 0, 0, 0]), 0)
    tag, status, sense = k.recv()
    assert tag == 9 and status == 2 and len(sense) == 18 and sense[12] == 0x20


def test_read_data_matches_image(served, iso):
    k, _, _, _ = served
    k.send(1, bytes([0x28, 0, 0, 0, 0, 16, 0, 0, 4, 0]), 8192)
    _, status, data = k.recv()
    assert status == 0 and data == iso.data[16 * 2048 : 20 * 2048]


def test_data_out_reaches_mode_select(served):
    k, _, _, _ = served
    plist = bytes(4) + bytes((0x2A, 0x05)) + bytes(5)  # wrong length for page 2A
    k.send(2, bytes([0x15, 0x10, 0, 0, len(plist), 0]), len(plist), plist)
    _, status, sense = k.recv()
    assert status == 2 and sense[12] == 0x26


def test_slow_command_does_not_block_others(served):
    k, dev, _, _ = served
    dev.faults.add(parse_fault("delay:ms=400,op=0x28"))
    k.send(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 2048)
    k.send(2, bytes([0, 0, 0, 0, 0, 0]), 0)
    first = k.recv()
    second = k.recv()
    assert first[0] == 2 and second[0] == 1


def test_hang_never_answers_and_is_traced(served):
    k, dev, _, trace_path = served
    dev.faults.add(parse_fault("hang:op=0x25,count=1"))
    k.send(3, bytes([0x25] + [0] * 9), 8)
    with pytest.raises(TimeoutError):
        k.recv(timeout=0.5)
    k.send(4, bytes([0x25] + [0] * 9), 8)
    assert k.recv()[0] == 4
    recs = _trace(trace_path)
    hung = [r for r in recs if r["status"] is None]
    assert len(hung) == 1 and hung[0]["op"] == "READ CAPACITY(10)"


def test_trace_records(served):
    k, _, _, trace_path = served
    k.send(1, bytes([0, 0, 0, 0, 0, 0]), 0)
    k.recv()
    k.send(2, bytes([0x28, 0, 0xFF, 0, 0, 0, 0, 0, 1, 0]), 2048)
    k.recv()
    for _ in range(50):
        recs = _trace(trace_path)
        if len(recs) == 2:
            break
        time.sleep(0.01)
    assert [tuple(r) for r in recs] == [TRACE_KEYS, TRACE_KEYS]
    tur, bad = sorted(recs, key=lambda r: r["op"] != "TEST UNIT READY")
    assert tur["op"] == "TEST UNIT READY" and tur["status"] == 0 and tur["sense"] is None
    assert tur["cdb"] == "000000000000" and tur["bytes"] == 0 and tur["dev"] == 0
    assert bad["op"] == "READ(10)" and bad["status"] == 2 and bad["sense"] == "05/21/00"
    assert bad["len"] == 2048 and bad["bytes"] == 18
    assert isinstance(bad["t"], float) and bad["us"] >= 0


def test_stop_closes_fd(served):
    k, dev, server, _ = served
    dev.faults.add(parse_fault("delay:ms=10000,op=0x28"))
    k.send(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 2048)
    time.sleep(0.1)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 3  # the delay is cut short
    assert k.sock.recv(100) == b""  # peer closed: the "kernel" sees the fd go away


def test_several_devices_one_server(tmp_path, iso):
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(3)]
    server = Server(threads=2)
    try:
        for i, (_, r) in enumerate(pairs):
            fd = r.detach()
            os.set_blocking(fd, False)
            d = Device(index=i, devnum=i)
            if i == 1:
                d.state.medium = Medium.open(iso.path)
            server.add(fd, d)
        for i, (kside, _) in enumerate(pairs):
            FakeKernel(kside).send(i, bytes(6), 0)
        results = [FakeKernel(k).recv() for k, _ in pairs]
        assert [r[1] for r in results] == [2, 0, 2]
    finally:
        server.stop()
        for k, _ in pairs:
            k.close()


def test_peer_hang_up_stops_every_thread_of_that_drive(served):
    k, _, server, _ = served
    ep = server.endpoints[0]
    k.sock.close()
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in ep.threads) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ep.closed and not any(t.is_alive() for t in ep.threads)


def test_one_thread_per_drive_answers_in_order(iso):
    """With --threads 1 a delayed command holds back the next: the knob is real."""
    with serving(iso.path, 1, fault="delay:ms=300,op=0x28") as (k, _, _):
        k.send(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 2048)
        k.send(2, bytes(6), 0)
        assert [k.recv()[0], k.recv()[0]] == [1, 2]


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="threads per drive"):
        Server(threads=0)


class _SlowSource:
    """An image on slow storage: every read says it may block, then takes 400 ms."""

    size = 64 * 2048

    def pread(self, length, offset, before_block=None):
        if before_block is not None:
            before_block()
        time.sleep(0.4)
        return bytes(length)


def test_read_that_may_block_lets_another_thread_lead(iso):
    with serving(iso.path, 2) as (k, dev, _):
        dev.state.medium = Medium(_SlowSource(), dev.state.medium.kind)
        k.send(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 2048)
        k.send(2, bytes(6), 0)  # TEST UNIT READY (answers the pending UNIT ATTENTION)
        assert k.recv()[0] == 2 and k.recv()[0] == 1
