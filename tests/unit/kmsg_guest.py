"""A fake guest for flow tests: it answers only the harness's per-test kernel-health commands.

The throw-away suites (tests/unit/throwaway_suite.py) import it, so the
real conformance conftest drives it exactly as it drives a guest.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

from lab.cell.health import KMEMLEAK_PROBE
from lab.errors import GuestLostError
from lab.vm.guest import CommandChannel, CommandResult


class KmsgGuest(CommandChannel):
    """``tail(test)`` is the kernel log a test leaves after its start marker;
    ``alive()`` False makes every command a lost guest."""

    def __init__(
        self,
        tail: Callable[[str], str] = lambda test: "",
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.tail = tail
        self.alive = alive
        self.marker = ""

    def sh(
        self, cmd: str, timeout: float = 0, check: bool = True, stdin: bytes | None = None
    ) -> CommandResult:
        if not self.alive():
            raise GuestLostError(f"lost the ssh connection (QEMU is not running) during {cmd}")
        if cmd == KMEMLEAK_PROBE:
            return CommandResult(cmd, 0, "absent\n", "")
        found = re.match(r"echo (.+?) > /dev/kmsg", cmd)
        if found:
            self.marker = shlex.split(found.group(1))[0]
            return CommandResult(cmd, 0, "4096\n", "")
        test = self.marker.split()[3]  # "vhba-lab: test start <group/test> <time>"
        return CommandResult(cmd, 0, f"4096\n[   40.000000] {self.marker}\n{self.tail(test)}", "")
