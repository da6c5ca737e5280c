"""How a kernel gets into a guest image: Debian packages, or a contributor's build tree.

Both end the same way inside the image's root tree: the kernel's modules in
/lib/modules/<release>, its build tree at /usr/src/linux-headers-<release>
(so the module builds by chroot exactly as for Debian kernels), and an
initramfs made by the release's own initramfs-tools.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
from pathlib import Path
from typing import Callable, Protocol, Union

from lab.catalogue.archive import download_deb
from lab.catalogue.kernels import KernelEntry, LocalKernel
from lab.errors import ImageBuildError
from lab.paths import cache_root

AnyKernel = Union[KernelEntry, LocalKernel]


class KernelInstall(Protocol):
    def identity(self) -> dict[str, object]: ...
    def describe(self) -> str: ...
    def prepare(self, work: Path, say: Callable[[str], None]) -> None: ...
    def extra_packages(self) -> list[str]: ...
    def apt_suites(self) -> tuple[str, ...]: ...
    def hooks(self, work: Path) -> list[str]: ...
    def cleanup(self, work: Path) -> None: ...
    def vmlinuz(self, tree: Path) -> Path: ...


class DebianKernelInstall:
    """The image, its split parts and headers of exactly one Debian version, via apt."""

    def __init__(self, kernel: KernelEntry) -> None:
        self.kernel = kernel

    def identity(self) -> dict[str, object]:
        k = self.kernel
        ident: dict[str, object] = {
            "image": [[d.package, d.version] for d in (k.image, *k.image_parts)],
            "headers": [[d.package, d.version] for d in k.headers],
        }
        if self._target():
            ident["apt_target"] = self._target()
        return ident

    def _target(self) -> str | None:
        """A backports kernel may need newer helpers (e.g. linux-base) from its own suite."""
        return self.kernel.suite if self.kernel.suite.endswith("-backports") else None

    def apt_suites(self) -> tuple[str, ...]:
        target = self._target()
        return (target,) if target else ()

    def describe(self) -> str:
        return f"linux-image-{self.kernel.abi} {self.kernel.version}"

    def prepare(self, work: Path, say: Callable[[str], None]) -> None:
        k = self.kernel
        if k.parts_missing:
            raise ImageBuildError(
                f"{k.abi}: the mirror lacks {', '.join(k.parts_missing)}; "
                "try another kernel or --refresh"
            )
        say(f"[{k.series}] downloading kernel packages {k.version}")
        debs = work / "debs"
        debs.mkdir()
        for deb in (k.image, *k.image_parts, *k.headers):
            src = download_deb(deb, cache_root() / "debs")
            shutil.copy2(src, debs / src.name)

    def extra_packages(self) -> list[str]:
        return []

    def hooks(self, work: Path) -> list[str]:
        target = f"-t {self._target()}" if self._target() else ""
        return [
            f'mkdir -p "$1/tmp/kernel-debs" && cp {work / "debs"}/*.deb "$1/tmp/kernel-debs/"',
            # apt resolves the kernel's own dependencies (gcc, kmod, initramfs) from the release.
            'chroot "$1" sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y '
            f'--no-install-recommends {target} /tmp/kernel-debs/*.deb"',
            'rm -rf "$1/tmp/kernel-debs"',
        ]

    def cleanup(self, work: Path) -> None:
        shutil.rmtree(work / "debs", ignore_errors=True)

    def vmlinuz(self, tree: Path) -> Path:
        return tree / "boot" / f"vmlinuz-{self.kernel.abi}"


class LocalKernelInstall:
    """A kernel built on the host (e.g. during a bisect): bzImage + modules + build tree."""

    # Build products the external-module build never needs; leaving them out keeps the
    # copied build tree small.  The link intermediates (.tmp_vmlinux*, vmlinux.bin*) are
    # ~0.5 GB in a KASAN build (lab/build/debug_kernel.py).
    EXCLUDES = ("*.o", "*.ko", "*.a", ".*.cmd", "*.mod.c", ".git", "vmlinux", "vmlinux.o",
                ".tmp_vmlinux*", "vmlinux.bin*")  # fmt: skip

    def __init__(self, kernel: LocalKernel) -> None:
        self.kernel = kernel

    def identity(self) -> dict[str, object]:
        digest = hashlib.sha256()
        for path in (self.kernel.bzimage, self.kernel.module_symvers):
            digest.update(path.read_bytes())
        return {"local": [self.kernel.kernel_release, str(self.kernel.path), digest.hexdigest()]}

    def describe(self) -> str:
        return f"local kernel {self.kernel.kernel_release} from {self.kernel.path}"

    def prepare(self, work: Path, say: Callable[[str], None]) -> None:
        if not (self.kernel.path / "modules.order").exists():
            raise ImageBuildError(
                f"{self.kernel.path} has no modules.order: build the modules too "
                "('make -j$(nproc) bzImage modules')"
            )

    def extra_packages(self) -> list[str]:
        return ["initramfs-tools"]

    def apt_suites(self) -> tuple[str, ...]:
        return ()

    def hooks(self, work: Path) -> list[str]:
        rel = self.kernel.kernel_release
        src = shlex.quote(str(self.kernel.path))
        headers = f'"$1/usr/src/linux-headers-{rel}"'
        excludes = " ".join(f"--exclude={shlex.quote(p)}" for p in self.EXCLUDES)
        return [
            f'make -s -C {src} modules_install INSTALL_MOD_PATH="$1" INSTALL_MOD_STRIP=1',
            f"mkdir -p {headers} && tar -C {src} {excludes} -cf - . | tar -C {headers} -xf -",
            f'rm -f "$1/lib/modules/{rel}/build" && '
            f'ln -s /usr/src/linux-headers-{rel} "$1/lib/modules/{rel}/build"',
            f'chroot "$1" depmod -a {rel}',
            f'chroot "$1" update-initramfs -c -k {rel}',
        ]

    def cleanup(self, work: Path) -> None:
        """Nothing was downloaded."""

    def vmlinuz(self, tree: Path) -> Path:
        return self.kernel.bzimage


def kernel_install(kernel: AnyKernel) -> KernelInstall:
    if isinstance(kernel, LocalKernel):
        return LocalKernelInstall(kernel)
    return DebianKernelInstall(kernel)
