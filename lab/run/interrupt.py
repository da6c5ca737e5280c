"""A run stopped by SIGTERM or SIGHUP ends as one stopped by Ctrl-C does: reported.

CI engines cancel a job with SIGTERM (SIGKILL follows after a grace period) and
a closed terminal sends SIGHUP; Python's default for both is to die on the spot,
which leaves a run directory without a report and the cells' guests to their
parent-death signal.  Raised as KeyboardInterrupt instead, the signal lets
pytest stop the workers (whose cell teardowns stop QEMU and keep the logs) and
the runner write the report of what ran, unfinished cells marked as such.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType

TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@dataclass
class Termination:
    """What termination signals did within :func:`termination_interrupts`."""

    received: list[str] = field(default_factory=list)  # signal names, in order
    held: bool = False

    def hold(self) -> None:
        """From now on a signal is noted, not raised: what remains (writing the
        report) is short and must not be cut in half."""
        self.held = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)
        # Only the first one interrupts: a CI engine that repeats itself must not
        # cut short the teardown the first one began.
        if len(self.received) == 1 and not self.held:
            raise KeyboardInterrupt(self.received[0])


@contextlib.contextmanager
def termination_interrupts() -> Iterator[Termination]:
    """Within the block, the first SIGTERM or SIGHUP raises KeyboardInterrupt (until
    :meth:`Termination.hold`); the previous handlers come back after it.  Outside
    the main thread, where handlers cannot be set, the block runs as is."""
    state = Termination()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {signum: signal.signal(signum, state._handle) for signum in TERMINATION_SIGNALS}
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
