"""What every command needs: mirror, catalogue, image cache, accelerator, console.

Built once per CLI invocation from the options, and passed down explicitly
(no module-level state), so tests and the conformance plugin can build their
own with different settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from rich.console import Console

from lab.build.debug_kernel import DebugKernelStore, DebugSpec, debug_series, debug_spec
from lab.build.images import Image, ImageStore
from lab.build.kernel_install import AnyKernel
from lab.catalogue.apt_sources import Mirror, find_mirror
from lab.catalogue.kernels import Catalogue, resolve_local
from lab.config import Config, load_config
from lab.vm.accel import AccelChoice, choose_accel


@dataclass
class LabContext:
    mirror_override: str | None = None
    security_override: str | None = None
    accel_request: str | None = None
    refresh: bool = False
    console: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, log_path=False)
    )

    @cached_property
    def config(self) -> Config:
        return load_config()

    @cached_property
    def mirror(self) -> Mirror:
        return find_mirror(self.mirror_override, self.security_override, config=self.config)

    @cached_property
    def catalogue(self) -> Catalogue:
        with self.console.status("reading the Debian kernel catalogue"):
            return Catalogue.load(
                self.mirror, refresh=self.refresh, extra_suites=self.config.extra_suites
            )

    @cached_property
    def accel(self) -> AccelChoice:
        return choose_accel(self.accel_request)

    @cached_property
    def images(self) -> ImageStore:
        return ImageStore()

    @cached_property
    def debug_kernels(self) -> DebugKernelStore:
        return DebugKernelStore()

    @classmethod
    def from_args(cls, args: object) -> LabContext:
        """Build from the common CLI options (see ``lab.cli._add_common``)."""
        return cls(
            mirror_override=getattr(args, "mirror", None),
            security_override=getattr(args, "security_mirror", None),
            accel_request=getattr(args, "accel", None),
            refresh=bool(getattr(args, "refresh", False)),
        )

    def say(self, message: str) -> None:
        self.console.log(message)

    def resolve(self, names: list[str]) -> list[AnyKernel]:
        """Catalogue names (``all`` = every Debian series) and debug kernels (``6.12-debug``).

        A debug kernel is built from source on first use (tens of minutes), then cached.
        """
        result: list[AnyKernel] = []
        plain: list[str] = []

        def flush() -> None:
            result.extend(self.catalogue.resolve_many(plain))
            plain.clear()

        for name in names:
            if debug_series(name):
                flush()
                result.append(self.debug_kernel(name))
            else:
                plain.append(name)
        flush()
        return result

    def debug_spec(self, name: str) -> DebugSpec:
        """What ``6.12-debug`` is made of: Debian's 6.12 source of the catalogue's version."""
        series = debug_series(name) or name
        return debug_spec(self.catalogue.resolve(series))

    def debug_kernel(self, name: str, rebuild: bool = False) -> AnyKernel:
        """The built debug kernel tree for ``name`` (built now if not cached)."""
        return self.debug_kernels.get(self.debug_spec(name), self.mirror, self.say, rebuild=rebuild)

    def check_kernel_name(self, name: str) -> None:
        """Raise UnknownKernelError for a name no cell can use; builds nothing."""
        if debug_series(name):
            self.debug_spec(name)  # the base series must exist and have a debug recipe
        else:
            self.catalogue.resolve(name)

    def resolve_one(self, name: str) -> AnyKernel:
        """A catalogue name, a debug kernel, or a path to a contributor's kernel build dir."""
        if "/" in name or Path(name).is_dir():
            return resolve_local(name)
        if debug_series(name):
            return self.debug_kernel(name)
        return self.catalogue.resolve(name)

    def image_for(self, kernel: AnyKernel) -> Image:
        return self.images.get(kernel, self.mirror, progress=self.say)
