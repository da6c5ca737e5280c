"""Integration tests boot real guests: one shared lab context and reference image.

Every boot retried for infrastructure (a guest that died before ssh) is named
at the end of the run, or "none": a green run says how clean it was.  Boots in
this process warn :class:`BootRetried`; the matrix tests' ``vhba-lab run``
subprocesses leave theirs in each cell's cell.json, which the
``note_boot_retries`` fixture turns into the same warnings.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.build.images import Image
from lab.catalogue.kernels import KernelEntry
from lab.cell.spec import REFERENCE_KERNEL
from lab.context import LabContext
from lab.run.runner import boot_retries
from lab.vm.session import BootRetried


class _RetriedBoots:
    """Collects BootRetried warnings and names them in the terminal summary."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def pytest_warning_recorded(self, warning_message: warnings.WarningMessage) -> None:
        if issubclass(warning_message.category, BootRetried):
            self.seen.append(str(warning_message.message))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        said = "; ".join(self.seen) if self.seen else "none"
        terminalreporter.write_line(f"boots retried (infrastructure, not a verdict): {said}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_RetriedBoots(), "vhba-lab-retried-boots")


def _warn_boot_retries(reports: Path) -> None:
    """Warn BootRetried for each boot the cells of the runs under ``reports`` retried."""
    for cell_dir in sorted(reports.glob("*/cells/*")):
        if cell_dir.parent.parent.name == "latest":  # a link to one of the runs
            continue
        for retry in boot_retries(cell_dir):
            warnings.warn(BootRetried(f"{cell_dir.name}: {retry}"), stacklevel=2)


@pytest.fixture(scope="session")
def lab() -> LabContext:
    return LabContext()


@pytest.fixture(scope="session")
def reference_kernel(lab: LabContext) -> KernelEntry:
    return lab.catalogue.resolve(REFERENCE_KERNEL)


@pytest.fixture(scope="session")
def reference_image(lab: LabContext, reference_kernel: KernelEntry) -> Image:
    return lab.image_for(reference_kernel)


@pytest.fixture(scope="session")
def note_boot_retries() -> Callable[[Path], None]:
    """Call with a ``vhba-lab run --reports`` directory after the run (not for injected
    boot faults: those retries are the test's own)."""
    return _warn_boot_retries
