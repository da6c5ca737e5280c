"""A cell of the matrix: (kernel, module, responder), and the default matrix.

The default is every kernel series with our module and our responder, plus
the two cross-stack cells on the reference kernel: Debian's upstream vhba
module under our responder, and our module under Debian's cdemu-daemon.
Together they show ABI compatibility from both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lab.errors import UsageError

MODULES = ("ours", "upstream")
RESPONDERS = ("ours", "cdemu")
# trixie's kernel: the newest Debian stable, whose vhba-dkms and cdemu-daemon we pair with.
REFERENCE_KERNEL = "6.12"
# The kernel part is a series, optionally a lab-built variant of it ("6.12-debug":
# Debian's source with sanitizers, see lab/build/debug_kernel.py).
# The module part is ours, upstream, or the name of a tree given with --module PATH
# (lab/build/module_source.py): lower-case letters and digits.
_CELL_ID = re.compile(
    r"^(?P<kernel>[0-9]+\.[0-9]+(?:-debug)?)-(?P<module>[a-z][a-z0-9]*)-(?P<responder>[a-z]+)$"
)
_MODULE_NAME = re.compile(r"^[a-z][a-z0-9]{0,23}$")


@dataclass(frozen=True, order=True)
class CellSpec:
    kernel: str  # a kernel series, e.g. "6.12", or a debug kernel, e.g. "6.12-debug"
    module: str = "ours"  # ours, upstream, or a --module tree's name
    responder: str = "ours"

    def __post_init__(self) -> None:
        # "debug" would make 6.12-debug-ours mean two things (a debug kernel, or a module)
        if self.module not in MODULES and (
            not _MODULE_NAME.match(self.module) or self.module == "debug"
        ):
            raise UsageError(
                f"unknown module {self.module!r}: choose one of {', '.join(MODULES)}, or the "
                "name of a tree given with --module PATH"
            )
        if self.responder not in RESPONDERS:
            raise UsageError(
                f"unknown responder {self.responder!r}: choose one of {', '.join(RESPONDERS)}"
            )

    @property
    def cell_id(self) -> str:
        return f"{self.kernel}-{self.module}-{self.responder}"

    @classmethod
    def parse(cls, cell_id: str) -> CellSpec:
        match = _CELL_ID.match(cell_id)
        if not match:
            raise UsageError(
                f"bad cell id {cell_id!r}: expected SERIES-MODULE-RESPONDER, e.g. 6.12-ours-ours "
                "or 6.12-debug-ours-ours"
            )
        return cls(match["kernel"], match["module"], match["responder"])


def default_cells(series: list[str], reference: str = REFERENCE_KERNEL) -> list[CellSpec]:
    """Every series with our stack, plus, where ``reference`` is tested, its debug
    (sanitizer) cell and the cross-stack cells.

    The debug cell comes first: it is the longest (its kernel is built on first
    use, and a full cell takes most of an hour under TCG, docs/debug-kernels.md),
    so in a run of several cells at once it starts while the others share the
    remaining guests.
    """
    cells = [CellSpec(s) for s in series]
    if reference in series:
        cells.insert(0, CellSpec(f"{reference}-debug"))
        cells += [CellSpec(reference, "upstream", "ours"), CellSpec(reference, "ours", "cdemu")]
    return cells
