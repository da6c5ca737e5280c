"""SIGTERM and SIGHUP stop a run the way Ctrl-C does (real signals, this process)."""

from __future__ import annotations

import os
import signal

import pytest

from lab.run.interrupt import termination_interrupts


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    signal.sigtimedwait([], 0)  # a call boundary: a pending handler has run by now


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_termination_signal_raises_keyboard_interrupt_once(signum: int) -> None:
    before = signal.getsignal(signum)
    with termination_interrupts() as stop:
        with pytest.raises(KeyboardInterrupt):
            _deliver(signum)
        # A second signal (a CI engine repeating itself) must not cut the
        # teardown and report writing that the first one started.
        _deliver(signum)
    assert stop.received == [signal.Signals(signum).name] * 2
    assert signal.getsignal(signum) == before


def test_a_held_run_notes_the_signal_and_goes_on() -> None:
    with termination_interrupts() as stop:
        stop.hold()  # the report is being written
        _deliver(signal.SIGTERM)
    assert stop.received == ["SIGTERM"]
