"""A cell's state and, once it breaks, why: the one place that tells harness from kernel.

A cell is BOOTING until its stack is up, then READY, and BROKEN from the
first moment it cannot go on.  What broke it decides what the report says:

* the product failed (module build/load, drive attach): FAIL, as before,
  recorded in ``CellEnv.broken`` and reported by the build/attach tests;
* the guest was lost.  The serial console says whose fault that was.  If
  the kernel printed a panic or oops *after the module was loaded*, the
  kernel running the module says it is wrong: a module verdict (PANIC,
  counted as FAIL).  A lockup or stall report alone is not: a starved TCG
  guest prints those too, so HANG is a module verdict only when the
  report's trace names vhba.  Anything else (QEMU exited with no kernel
  message, ssh stopped answering while QEMU runs, the guest never came up)
  is infrastructure: ERROR, never FAIL.

Either way the test that saw the loss carries the cause and every later
test of the cell is skipped with "cell broken: <cause>".
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from lab.report.results import Status


class CellState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    BROKEN = "broken"


class LossKind(enum.Enum):
    """Why a cell's guest went away, named from QEMU's state and the serial log."""

    BOOT = "boot"  # never became usable: set-up failed before any test ran
    QEMU_EXIT = "qemu-exit"  # QEMU is gone and the kernel printed nothing about it
    NO_ANSWER = "no-answer"  # QEMU runs, ssh does not answer, the kernel said nothing
    PANIC = "panic"  # the kernel printed a panic/oops (and QEMU exited or hangs)
    HANG = "hang"  # the kernel reported a lockup, stall or hung task

    @property
    def label(self) -> str:
        return self.value.upper()


# Serial-console lines by which the kernel says it is the one in trouble.
_PANIC = re.compile(r"Kernel panic - not syncing|Oops:|BUG: |general protection fault|"
                    r"kernel BUG at|double fault")  # fmt: skip
_HANG = re.compile(
    r"soft lockup - CPU#|hard LOCKUP|rcu: INFO: rcu_\w+ detected stalls|"
    r"blocked for more than \d+ seconds|workqueue lockup"
)


@dataclass(frozen=True)
class CellLoss:
    """A broken cell's cause, as the report shows it."""

    kind: LossKind
    cause: str  # one line
    module_loaded: bool
    blames_module: bool = False  # the kernel's report points at the module (see classify_loss)

    @property
    def infrastructure(self) -> bool:
        """True when the module cannot be blamed: the kernel said nothing, or ran no module."""
        return not (self.module_loaded and self.blames_module)

    @property
    def status(self) -> Status:
        """The status of the test that saw the loss (and of the cell)."""
        return Status.ERROR if self.infrastructure else Status.FAIL

    @property
    def message(self) -> str:
        return f"{self.kind.label}: {self.cause}"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind.value, "cause": self.cause, "module_loaded": self.module_loaded,
            "blames_module": self.blames_module, "infrastructure": self.infrastructure,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, object]) -> CellLoss:
        return cls(
            LossKind(str(data["kind"])), str(data["cause"]), bool(data["module_loaded"]),
            bool(data.get("blames_module", False)),
        )  # fmt: skip


#: Lines after a report's first line that still belong to its trace.
_TRACE_LINES = 60


def kernel_complaint(serial: str) -> tuple[LossKind, str, bool] | None:
    """The first panic/oops or hang report on the serial console, if any.

    Returns (kind, its first line, whether the report blames the module):
    a panic always does once the module is in; a hang only when ``vhba``
    appears in its trace.
    """
    lines = serial.splitlines()
    for n, line in enumerate(lines):
        if _HANG.search(line):  # first: "watchdog: BUG: soft lockup" is no oops
            trace = "\n".join(lines[n : n + _TRACE_LINES])
            return LossKind.HANG, line.strip(), "vhba" in trace
        if _PANIC.search(line):
            return LossKind.PANIC, line.strip(), True
    return None


def classify_loss(
    serial_since_ready: str, qemu_exit: int | None, module_loaded: bool, seen: str
) -> CellLoss:
    """Name a lost guest from what the serial console printed since the cell was ready.

    ``qemu_exit`` is QEMU's exit code (None: still running); ``seen`` is what
    the harness observed (the channel's error), kept in the cause.
    """
    complaint = kernel_complaint(serial_since_ready)
    if complaint is not None:
        kind, line, blames = complaint
        return CellLoss(
            kind, f"{line} (serial console; the harness saw: {seen})", module_loaded, blames
        )
    if qemu_exit is not None:
        how = f"signal {-qemu_exit}" if qemu_exit < 0 else f"code {qemu_exit}"
        return CellLoss(
            LossKind.QEMU_EXIT,
            f"QEMU exited ({how}) with no kernel message on the serial console",
            module_loaded,
        )
    return CellLoss(
        LossKind.NO_ANSWER,
        f"the guest stopped answering ssh while QEMU runs, no kernel message ({seen})",
        module_loaded,
    )
