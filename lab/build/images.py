"""Guest images: one cached, verified image per kernel, built with mmdebstrap.

An image is the kernel's own Debian release userspace (the recipe in
``guest-images/``) with that exact kernel and its headers installed, so the
module is later built by chroot in the same userspace, with the same gcc, that
a DKMS user of that kernel has.  The cache entry is content-addressed: its
directory name hashes the recipe files, the mirror, the release and the kernel
package versions, so a changed recipe never reuses a stale image.  Every file
that boots is recorded with its sha256 in ``manifest.json`` and checked
before use; a mismatch rebuilds the entry.  Guests always boot a copy-on-write
overlay (or a copy of the warm snapshot), never the cached disk itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.build.kernel_install import AnyKernel, KernelInstall, kernel_install
from lab.catalogue.apt_sources import Mirror
from lab.catalogue.digest import sha256_file
from lab.errors import CacheCorruptError, ImageBuildError
from lab.paths import cache_root, repo_root

log = logging.getLogger(__name__)

RECIPE_DIR = repo_root() / "guest-images"
# Bump when the build procedure itself changes in a way the recipe files do not show.
BUILD_PROCEDURE = "3"
# Free space left in the root filesystem for builds, ISOs and logs in the guest.
HEADROOM_MB = 2048

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Image:
    """A verified cache entry ready to boot."""

    path: Path
    release: str
    abi: str

    @property
    def tree(self) -> Path:
        return self.path / "tree"

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def disk(self) -> Path:
        return self.path / "disk.qcow2"

    @property
    def client_key(self) -> Path:
        return self.path / "client_key"

    @property
    def host_pubkey(self) -> Path:
        return self.path / "host_key.pub"

    @property
    def build_log(self) -> Path:
        return self.path / "build.log"

    @property
    def headers_dir(self) -> Path:
        """The kernel build tree as seen from inside the chroot."""
        return Path("/usr/src") / f"linux-headers-{self.abi}"

    def manifest(self) -> dict[str, object]:
        return json.loads((self.path / "manifest.json").read_text())


BOOT_FILES = ("vmlinuz", "initrd.img", "disk.qcow2", "client_key", "host_key.pub")


def recipe_packages(release: str) -> list[str]:
    """Packages from ``base.packages`` plus ``<release>.packages`` (comments stripped)."""
    names: list[str] = []
    for name in ("base.packages", f"{release}.packages"):
        path = RECIPE_DIR / name
        if path.exists():
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    names.append(line)
    return names


def _recipe_digest(release: str) -> str:
    digest = hashlib.sha256(BUILD_PROCEDURE.encode())
    for path in sorted(RECIPE_DIR.iterdir()):
        if path.is_file() and (path.suffix in (".packages", ".sh")):
            if path.suffix == ".packages" and path.stem not in ("base", release):
                continue
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def image_key(kernel: AnyKernel, mirror: Mirror) -> str:
    """Cache directory name: readable prefix + hash of everything that shapes the image."""
    material = json.dumps(
        {
            "recipe": _recipe_digest(kernel.release),
            "mirror": [mirror.archive, mirror.security],
            "release": kernel.release,
            **kernel_install(kernel).identity(),
        },
        sort_keys=True,
    )
    return f"{kernel.release}-{kernel.abi}-{hashlib.sha256(material.encode()).hexdigest()[:12]}"


def _suite_exists(base: str, suite: str) -> bool:
    url = f"{base.rstrip('/')}/dists/{suite}/InRelease"
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False
    except urllib.error.URLError as exc:
        raise ImageBuildError(f"cannot reach the mirror {base}: {exc.reason}") from exc


def reuse_or_rebuild(
    path: Path,
    rebuild: bool,
    verify: Callable[[Path], None],
    build: Callable[[], None],
    say: Callable[[str], None],
) -> None:
    """Keep the cache entry at ``path`` if it verifies; otherwise (or if asked) build it anew.

    A corrupt entry is said and rebuilt, never used; the new one is verified too.
    """
    if path.exists() and not rebuild:
        try:
            verify(path)
            return
        except CacheCorruptError as exc:
            say(f"cache entry corrupt, rebuilding: {exc}")
    if path.exists():
        shutil.rmtree(path)
    build()
    verify(path)


def apt_sources_for(release: str, mirror: Mirror, extra: tuple[str, ...] = ()) -> list[str]:
    """One-line apt sources for a release's userspace: release, -updates, -security (+extra)."""
    lines = [f"deb {mirror.archive} {release} main"]
    lines += [f"deb {mirror.archive} {suite} main" for suite in extra]
    if release not in ("sid", "unstable"):
        if _suite_exists(mirror.archive, f"{release}-updates"):
            lines.append(f"deb {mirror.archive} {release}-updates main")
        if mirror.security and _suite_exists(mirror.security, f"{release}-security"):
            lines.append(f"deb {mirror.security} {release}-security main")
    return lines


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise builders of the same cache entry across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ImageStore:
    """The image cache under ``cache_root()/images``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or cache_root()) / "images"

    def entries(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def verify(self, path: Path) -> None:
        """Check every boot file against the manifest; raise CacheCorruptError on a mismatch."""
        manifest_path = path / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError) as exc:
            raise CacheCorruptError(f"{path}: unreadable manifest ({exc})") from exc
        for name in BOOT_FILES:
            target = path / name
            if not target.is_file():
                raise CacheCorruptError(f"{path}: {name} is missing")
            if sha256_file(target) != files.get(name):
                raise CacheCorruptError(f"{path}: {name} does not match its recorded sha256")
        if not (path / "tree" / "usr" / "src" / f"linux-headers-{manifest['abi']}").is_dir():
            raise CacheCorruptError(f"{path}: the root tree lost its kernel headers")

    def get(
        self,
        kernel: AnyKernel,
        mirror: Mirror,
        progress: Progress | None = None,
        rebuild: bool = False,
    ) -> Image:
        """Return a verified image for ``kernel``, building (or rebuilding) it if needed."""
        key = image_key(kernel, mirror)
        path = self.root / key
        say = progress or (lambda msg: log.info("%s", msg))
        with locked(self.root / f".{key}.lock"):
            reuse_or_rebuild(
                path, rebuild, self.verify, lambda: self._build(kernel, mirror, path, say), say
            )
            return Image(path, kernel.release, kernel.abi)

    def prune(self, keep: set[str]) -> list[Path]:
        """Delete finished entries whose name is not in ``keep``."""
        removed = []
        if not self.root.exists():
            return removed
        for entry in self.root.iterdir():
            # Dot-entries are builds in progress (a failed one removes itself).
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
            elif entry.name.endswith(".failed-build.log"):
                entry.unlink()
                removed.append(entry)
        return removed

    # -- building -------------------------------------------------------------
    def _build(self, kernel: AnyKernel, mirror: Mirror, final: Path, say: Progress) -> None:
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=self.root))
        build_log = work / "build.log"
        install = kernel_install(kernel)
        try:
            install.prepare(work, say)
            self._keys(work)
            tree = work / "tree"
            say(f"[{kernel.series}] mmdebstrap {kernel.release} + {install.describe()}")
            self._mmdebstrap(kernel.release, install, mirror, tree, work, build_log)
            install.cleanup(work)
            shutil.copy2(install.vmlinuz(tree), work / "vmlinuz")
            initrd = tree / "boot" / f"initrd.img-{kernel.abi}"
            if not initrd.exists():
                raise ImageBuildError(
                    f"no initrd was generated for {kernel.abi}; see {final / 'build.log'}"
                )
            shutil.copy2(initrd, work / "initrd.img")
            say(f"[{kernel.series}] making the ext4 disk")
            self._disk(tree, work / "disk.qcow2", build_log)
            manifest = {
                "key": final.name,
                "release": kernel.release,
                "series": kernel.series,
                "abi": kernel.abi,
                "version": kernel.version,
                "source": install.describe(),
                "mirror": {"archive": mirror.archive, "security": mirror.security},
                "packages": recipe_packages(kernel.release),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.monotonic() - started, 1),
                "files": {name: sha256_file(work / name) for name in BOOT_FILES},
            }
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            os.replace(work, final)
        except BaseException:
            failed_log = self.root / f"{final.name}.failed-build.log"
            if build_log.exists():
                shutil.copy2(build_log, failed_log)
            shutil.rmtree(work, ignore_errors=True)
            raise

    @staticmethod
    def _keys(work: Path) -> None:
        for name, comment in (("client_key", "vhba-lab"), ("host_key", "vhba-lab-guest")):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                 "-f", str(work / name)],
                check=True,
            )  # fmt: skip

    @staticmethod
    def _mmdebstrap(
        release: str,
        install: KernelInstall,
        mirror: Mirror,
        tree: Path,
        work: Path,
        build_log: Path,
    ) -> None:
        packages = recipe_packages(release) + install.extra_packages()
        host_key = work / "host_key"
        client_pub = work / "client_key.pub"
        hooks = [
            *install.hooks(work),
            f'sh {RECIPE_DIR / "customize.sh"} "$1"',
            'rm -f "$1"/etc/ssh/ssh_host_*',
            f'install -m 600 {host_key} "$1/etc/ssh/ssh_host_ed25519_key"',
            f'install -m 644 {host_key}.pub "$1/etc/ssh/ssh_host_ed25519_key.pub"',
            f'install -d -m 700 "$1/root/.ssh" && install -m 600 {client_pub} '
            '"$1/root/.ssh/authorized_keys"',
            'chroot "$1" apt-get clean',
        ]
        cmd = [
            "mmdebstrap", "--mode=root", "--variant=apt", "--verbose",
            # Mirrors may be dated snapshots whose sid/experimental Release files have
            # passed Valid-Until; the content is still what the index's hashes say.
            '--aptopt=Acquire::Check-Valid-Until "false"',
            f"--include={','.join(packages)}",
            *[f"--customize-hook={hook}" for hook in hooks],
            release, str(tree), *apt_sources_for(release, mirror, install.apt_suites()),
        ]  # fmt: skip
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        with build_log.open("ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0:
            tail = "\n".join(build_log.read_text(errors="replace").splitlines()[-15:])
            raise ImageBuildError(
                f"mmdebstrap failed for {release} + {install.describe()} "
                f"(exit {proc.returncode}); last lines of the build log:\n{tail}"
            )

    @staticmethod
    def _disk(tree: Path, out: Path, build_log: Path) -> None:
        used = subprocess.run(
            ["du", "-sm", "--exclude=./proc", "--exclude=./sys", "."],
            cwd=tree, check=True, capture_output=True, text=True,
        ).stdout.split()[0]  # fmt: skip
        size_mb = int(used) + HEADROOM_MB
        raw = out.with_suffix(".raw")
        with build_log.open("ab") as log_fh:
            for cmd in (
                ["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(tree), str(raw),
                 f"{size_mb}M"],
                ["qemu-img", "convert", "-O", "qcow2", str(raw), str(out)],
            ):  # fmt: skip
                proc = subprocess.run(cmd, stdout=log_fh, stderr=subprocess.STDOUT)
                if proc.returncode != 0:
                    raise ImageBuildError(f"{cmd[0]} failed; see the build log {build_log}")
        raw.unlink()
