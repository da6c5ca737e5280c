"""Integration tests boot real guests: one shared lab context and reference image."""

from __future__ import annotations

import pytest

from lab.build.images import Image
from lab.catalogue.kernels import KernelEntry
from lab.cell.spec import REFERENCE_KERNEL
from lab.context import LabContext


@pytest.fixture(scope="session")
def lab() -> LabContext:
    return LabContext()


@pytest.fixture(scope="session")
def reference_kernel(lab: LabContext) -> KernelEntry:
    return lab.catalogue.resolve(REFERENCE_KERNEL)


@pytest.fixture(scope="session")
def reference_image(lab: LabContext, reference_kernel: KernelEntry) -> Image:
    return lab.image_for(reference_kernel)
