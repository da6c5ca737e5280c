"""How kernels get into images: Debian packages vs a contributor's build tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.build.kernel_install import LocalKernelInstall, kernel_install
from lab.catalogue.kernels import resolve_local
from lab.errors import ImageBuildError


def _build_dir(tmp_path: Path, release: str = "6.19.0-rc1-bisect+") -> Path:
    root = tmp_path / "linux"
    (root / "arch/x86/boot").mkdir(parents=True)
    (root / "include/config").mkdir(parents=True)
    (root / "arch/x86/boot/bzImage").write_bytes(b"kernel image v1")
    (root / "include/config/kernel.release").write_text(release + "\n")
    (root / "Module.symvers").write_text("0x0\tsym\tvmlinux\tEXPORT_SYMBOL\t\n")
    (root / "modules.order").write_text("drivers/scsi/sr_mod.o\n")
    return root


def test_local_kernel_installs_modules_build_tree_and_initramfs(tmp_path: Path) -> None:
    local = resolve_local(_build_dir(tmp_path))
    install = kernel_install(local)
    assert isinstance(install, LocalKernelInstall)
    assert local.abi == "6.19.0-rc1-bisect+" and local.series == "6.19"
    hooks = "\n".join(install.hooks(tmp_path))
    assert 'modules_install INSTALL_MOD_PATH="$1"' in hooks
    assert '"$1/usr/src/linux-headers-6.19.0-rc1-bisect+"' in hooks
    assert "--exclude='*.o'" in hooks or "--exclude=*.o" in hooks
    assert "update-initramfs -c -k 6.19.0-rc1-bisect+" in hooks
    assert "initramfs-tools" in install.extra_packages()
    assert install.vmlinuz(tmp_path / "tree") == local.bzimage


def test_rebuilt_kernel_changes_the_image_identity(tmp_path: Path) -> None:
    root = _build_dir(tmp_path)
    before = kernel_install(resolve_local(root)).identity()
    (root / "arch/x86/boot/bzImage").write_bytes(b"kernel image v2")
    assert kernel_install(resolve_local(root)).identity() != before


def test_build_dir_without_modules_is_refused(tmp_path: Path) -> None:
    root = _build_dir(tmp_path)
    (root / "modules.order").unlink()
    with pytest.raises(ImageBuildError, match="build the modules too"):
        kernel_install(resolve_local(root)).prepare(tmp_path, lambda _msg: None)
