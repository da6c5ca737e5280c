"""A fake guest for flow tests: it answers only the harness's per-test kernel-health commands.

The throw-away suites (tests/unit/throwaway_suite.py) import it, so the
real conformance conftest drives it exactly as it drives a guest.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

from lab.cell.health import KMEMLEAK_PROBE, KMEMLEAK_SCAN
from lab.errors import GuestLostError
from lab.vm.guest import CommandChannel, CommandResult


class KmsgGuest(CommandChannel):
    """``tail(test)`` is the kernel log a test leaves after its start marker;
    ``alive()`` False makes every command a lost guest; ``leaks`` (None: the
    kernel has no kmemleak) is what every kmemleak scan reads back, and
    ``scans`` counts them.

    The log is kept: markers the harness writes land in it (a test's tail
    right after its start marker), and reads from a marker return what follows.
    """

    def __init__(
        self,
        tail: Callable[[str], str] = lambda test: "",
        alive: Callable[[], bool] = lambda: True,
        leaks: str | None = None,
    ) -> None:
        self.tail = tail
        self.alive = alive
        self.leaks = leaks
        self.scans = 0
        self.log: list[str] = []

    def sh(
        self, cmd: str, timeout: float = 0, check: bool = True, stdin: bytes | None = None
    ) -> CommandResult:
        if not self.alive():
            raise GuestLostError(f"lost the ssh connection (QEMU is not running) during {cmd}")
        if cmd == KMEMLEAK_PROBE:
            return CommandResult(cmd, 0, "absent\n" if self.leaks is None else "present\n", "")
        if cmd == KMEMLEAK_SCAN:
            self.scans += 1
            return CommandResult(cmd, 0, self.leaks or "", "")
        out = "4096\n"
        grep = re.search(_GREP, cmd)
        if grep:
            markers = shlex.split(grep.group(1))[1::2]
            hit = [i for i, line in enumerate(self.log) if any(m in line for m in markers)]
            out += "".join(self.log[hit[0] :]) if hit else ""
        for said in re.findall(_KMSG_WRITE, cmd):
            line = shlex.split(said)[0]
            self.log.append(f"[   40.000000] {line}\n")
            if line.startswith("vhba-lab: test start "):  # "... <group/test> <time>"
                tail = self.tail(line.split()[3])
                self.log.append(tail if not tail or tail.endswith("\n") else tail + "\n")
        return CommandResult(cmd, 0, out, "")


_QUOTED = r"('[^']*')"  # the harness's markers hold spaces, never quotes: always quoted
_GREP = r"grep -F -A 1000000((?: -e " + _QUOTED + ")+)"
_KMSG_WRITE = r"echo " + _QUOTED + " > /dev/kmsg"
