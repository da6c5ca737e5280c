"""Debug kernels: Debian's own kernel source, rebuilt with a lean guest config plus sanitizers.

The distribution kernels in the catalogue find the bugs a user meets; they do
not find the bugs a user *causes* without noticing (a use-after-free that
happens to read stale memory, a lock taken in the wrong order, a sleep in
atomic context).  A debug row boots the same Debian source (the
``linux-source-X.Y`` package of exactly the catalogue's version of that
series) with KASAN, UBSAN, lockdep, kmemleak, KFENCE, debugobjects and the
hang/lockup watchdogs turned on, so the conformance suite becomes a bug finder.

Choices, each with its reason:

* **Lean config.**  Debian's full config builds thousands of drivers a q35
  guest never sees; on 2 niced cores that is hours.  ``make defconfig`` +
  ``make kvm_guest.config`` + :data:`GUEST_OPTIONS` + :data:`DEBUG_OPTIONS`
  (merged with the kernel's own ``merge_config.sh``) is what a lab guest
  needs, and big subsystems a guest never touches (DRM, sound, wireless,
  USB, netfilter, NFS, ATA, real NICs) are switched off to save build time.
  Every option of the fragment is checked in the final ``.config`` after
  ``olddefconfig``, because Kconfig silently drops an option whose
  dependencies are not met, and a "debug kernel" without KASAN would pass
  every test and mean nothing.
* **No debug info.**  ``DEBUG_INFO_NONE``: DWARF roughly doubles build time
  and tree size, while sanitizer reports are already symbolised through
  kallsyms.  Flip it in :data:`DEBUG_OPTIONS` when line numbers are needed.
* **Built in the release's own userspace.**  A dedicated rootfs of the
  kernel's release (trixie for 6.12: its gcc-14, glibc and binutils) with the
  build dependencies, made by mmdebstrap from the host's mirror config.  It
  is separate from the guest images' trees so that installing compilers never
  changes a verified image, and a build never races a module build there.
* **Booted like a contributor's tree.**  The result is an ordinary kernel
  build tree (``arch/x86/boot/bzImage``, ``include/config/kernel.release``,
  ``Module.symvers``, ``modules.order`` and the built modules), returned as a
  :class:`~lab.catalogue.kernels.LocalKernel`, so images, module builds and boots go
  through exactly the ``--kernel DIR`` path (:mod:`lab.build.kernel_install`).
* **Nice.**  ``make`` always runs under ``nice -n 19``: the lab machine has
  few cores and guests run tests concurrently; a TCG guest starved of CPU
  times out, a niced compile only takes longer.
* **Content-addressed cache.**  ``cache_root()/debug-kernels/<name>-<key>``
  with key = hash(source version, fragment, :data:`RECIPE_VERSION`, release).
  The tree is built in a temporary directory and renamed into place only
  when complete, with the sha256 of its boot files in ``build.json``; an
  entry that fails verification is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.table import Table

from lab.build.images import apt_sources_for, locked, reuse_or_rebuild
from lab.catalogue.apt_sources import Mirror
from lab.catalogue.archive import download_deb, pool_exists
from lab.catalogue.digest import sha256_file
from lab.catalogue.kernels import DebFile, KernelEntry, LocalKernel, resolve_local
from lab.errors import CacheCorruptError, LabError, UnknownKernelError
from lab.paths import cache_root

# Bump when the build procedure changes in a way the fragment does not show
# (commands, make targets, the builder's packages): old entries are then unused.
RECIPE_VERSION = "1"
DEBUG_SUFFIX = "-debug"
# Series whose linux-source package is known to build with this recipe: the
# reference kernel's and the newest the mirror has source for.
DEBUG_SERIES: tuple[str, ...] = ("6.12", "7.3")
# Series whose Kconfig has no X86_5LEVEL (5-level paging is always built in):
# their guests turn it off at boot instead (why: X86_5LEVEL in GUEST_OPTIONS).
NO_5LEVEL_OPTION: frozenset[str] = frozenset({"7.3"})
# How many times the normal boot timeouts a debug kernel gets, per accelerator:
# under TCG here its first boot to ssh took 1634 s (KASAN, lockdep and kmemleak
# on every allocation and lock), against ~40 s for Debian's kernel.
BOOT_PATIENCE = {"tcg": 10.0, "kvm": 3.0}
# hung_task_timeout_secs a debug guest boots with.  The kernel keeps the
# fragment's 30 s default (DEFAULT_HUNG_TASK_TIMEOUT), but the suite leaves SCSI
# commands to time out on purpose (30 s per attempt; the given-up-READ test
# blocks its reader for about 65 s): a reader that long in the block layer is
# the midlayer's error handling at work, not a hang, and a report for it would
# be a false SANITIZER verdict.  Under TCG everything is 10-40 times slower still.
HUNG_TASK_TIMEOUT_S = {"kvm": 120, "tcg": 600}


@dataclass(frozen=True)
class BootTuning:
    """How a kernel is booted besides its image: lab.vm.session.boot()'s kernel_args, patience."""

    kernel_args: str = ""
    patience: float = 1.0


def boot_tuning(kernel_name: str, accel: str) -> BootTuning:
    """Debian's kernels boot as they are; a debug kernel gets time and a looser watchdog."""
    series = debug_series(kernel_name)
    if series is None:
        return BootTuning()
    timeout = HUNG_TASK_TIMEOUT_S.get(accel, max(HUNG_TASK_TIMEOUT_S.values()))
    args = [f"sysctl.kernel.hung_task_timeout_secs={timeout}"]
    if series in NO_5LEVEL_OPTION:
        args.append("no5lvl")
    return BootTuning(" ".join(args), BOOT_PATIENCE.get(accel, max(BOOT_PATIENCE.values())))


# What ``make`` and the kernel's scripts need, in the release's userspace.
BUILD_PACKAGES: tuple[str, ...] = (
    "build-essential", "bc", "bison", "flex", "libssl-dev", "libelf-dev", "dwarves",
    "cpio", "kmod", "rsync", "python3", "xz-utils",
)  # fmt: skip
PROGRESS_SECONDS = 30.0
_DEBUG_NAME = re.compile(r"^(?P<series>[0-9]+\.[0-9]+)-debug$")
# kbuild's quiet output: "  CC      kernel/fork.o", "  CC [M]  drivers/scsi/scsi_debug.o".
_COMPILED = re.compile(r"^\s+(?:CC|AS)(?:\s+\[M\])?\s+(\S+)")

Say = Callable[[str], None]

# -- the config --------------------------------------------------------------

# What a q35 guest of this lab needs, on top of defconfig + kvm_guest.config.
# "n" is written as "# CONFIG_X is not set" and means "must not be enabled".
GUEST_OPTIONS: tuple[tuple[str, str], ...] = (
    # 32-bit userspace (e.g. old tools) and the out-of-tree vhba.ko, unsigned.
    ("IA32_EMULATION", "y"),
    # QEMU's "-cpu max" offers LA57.  On 6.12, pgtable_l5_enabled() reads the CPU
    # feature bits that identify_cpu() briefly clears at boot; an interrupt in that
    # window makes KASAN report a "wild-memory-access" on the 5-level direct map,
    # which taints the kernel and switches lockdep off for the whole boot.  4-level
    # paging is what nearly all real machines run anyway.  Kernels without the
    # option (NO_5LEVEL_OPTION) boot with no5lvl; to the config check an absent
    # option is "n".
    ("X86_5LEVEL", "n"),
    ("MODULES", "y"),
    ("MODULE_UNLOAD", "y"),
    ("MODULE_SIG", "n"),
    ("LOCALVERSION", '"-debug"'),
    ("LOCALVERSION_AUTO", "n"),
    # machine.py: virtio-blk root, virtio-net, virtio-rng, virtio-scsi + scsi-cd, serial console.
    ("PCI", "y"),
    ("VIRTIO_PCI", "y"),
    ("VIRTIO_BLK", "y"),
    ("VIRTIO_NET", "y"),
    ("VIRTIO_CONSOLE", "y"),
    ("HW_RANDOM", "y"),
    ("HW_RANDOM_VIRTIO", "y"),
    ("SERIAL_8250", "y"),
    ("SERIAL_8250_CONSOLE", "y"),
    # The SCSI stack vhba plugs into, and what the conformance suite compares against.
    ("SCSI", "y"),
    ("BLK_DEV_SD", "y"),
    ("BLK_DEV_SR", "y"),
    ("CHR_DEV_SG", "y"),
    ("CDROM", "y"),
    ("SCSI_VIRTIO", "y"),
    ("SCSI_DEBUG", "m"),
    # Filesystems: root, test media, cdemu/fuse tools, loop-mounted images.
    ("EXT4_FS", "y"),
    ("EXT4_FS_POSIX_ACL", "y"),
    ("ISO9660_FS", "y"),
    ("JOLIET", "y"),
    ("ZISOFS", "y"),
    ("UDF_FS", "y"),
    ("FUSE_FS", "y"),
    ("BLK_DEV_LOOP", "y"),
    ("TMPFS", "y"),
    ("TMPFS_POSIX_ACL", "y"),
    ("DEVTMPFS", "y"),
    ("DEVTMPFS_MOUNT", "y"),
    ("AUTOFS_FS", "y"),
    # What systemd and udev need (cgroup v2 with BPF device control, namespaces, fds).
    ("CGROUPS", "y"),
    ("MEMCG", "y"),
    ("CGROUP_BPF", "y"),
    ("BPF_SYSCALL", "y"),
    ("NAMESPACES", "y"),
    ("NET_NS", "y"),
    ("USER_NS", "y"),
    ("INOTIFY_USER", "y"),
    ("SIGNALFD", "y"),
    ("TIMERFD", "y"),
    ("EPOLL", "y"),
    ("FHANDLE", "y"),
    ("UNIX", "y"),
    ("INET", "y"),
    ("SECCOMP", "y"),
    ("SECCOMP_FILTER", "y"),
    ("DMIID", "y"),
    # Never seen by the guest; off to save build time on 2 cores.
    ("DRM", "n"),
    ("SOUND", "n"),
    ("WIRELESS", "n"),
    ("CFG80211", "n"),
    ("WLAN", "n"),
    ("USB_SUPPORT", "n"),
    ("NETFILTER", "n"),
    ("NFS_FS", "n"),
    ("ATA", "n"),
    ("ETHERNET", "n"),
    ("PCCARD", "n"),
    ("AGP", "n"),
    ("WERROR", "n"),
)

# The sanitizers and watchdogs that find this module's classes of bug.
DEBUG_OPTIONS: tuple[tuple[str, str], ...] = (
    ("DEBUG_KERNEL", "y"),
    ("DEBUG_INFO_NONE", "y"),
    ("KASAN", "y"),
    ("KASAN_GENERIC", "y"),
    ("KASAN_INLINE", "y"),
    ("KCSAN", "n"),  # excludes KASAN anyway; stated so nobody adds it by accident
    ("UBSAN", "y"),
    ("UBSAN_BOUNDS", "y"),
    ("UBSAN_SHIFT", "y"),
    ("UBSAN_ALIGNMENT", "n"),  # x86 tolerates misalignment; reports would be noise
    ("PROVE_LOCKING", "y"),
    ("DEBUG_ATOMIC_SLEEP", "y"),
    ("DEBUG_OBJECTS", "y"),
    ("DEBUG_OBJECTS_WORK", "y"),
    ("KFENCE", "y"),
    ("DEBUG_FS", "y"),
    ("DEBUG_KMEMLEAK", "y"),
    ("DEBUG_KMEMLEAK_DEFAULT_OFF", "n"),
    ("DETECT_HUNG_TASK", "y"),
    ("DEFAULT_HUNG_TASK_TIMEOUT", "30"),
    ("SOFTLOCKUP_DETECTOR", "y"),
    ("WQ_WATCHDOG", "y"),
)


class DebugKernelError(LabError):
    """The debug kernel could not be fetched, configured or built."""


class DebugConfigError(DebugKernelError):
    """Options of the fragment did not survive ``make olddefconfig``."""


def fragment_options() -> dict[str, str]:
    """Every option of the fragment, ``{"KASAN": "y", ...}`` (later entries win)."""
    return {name: value for name, value in (*GUEST_OPTIONS, *DEBUG_OPTIONS)}


def config_fragment(options: Mapping[str, str] | None = None) -> str:
    """The fragment as Kconfig text, as ``merge_config.sh`` reads it."""
    # The header keeps the module's old path (lab/debug_kernel.py): the fragment text is
    # part of the debug-kernel cache key, and a new path would rebuild every cached kernel.
    lines = ["# vhba-lab debug kernel: lean q35 guest + sanitizers (lab/debug_kernel.py)"]
    for name, value in (options if options is not None else fragment_options()).items():
        lines.append(f"# CONFIG_{name} is not set" if value == "n" else f"CONFIG_{name}={value}")
    return "\n".join(lines) + "\n"


def parse_config(text: str) -> dict[str, str]:
    """A ``.config`` as ``{"KASAN": "y", "MODULE_SIG": "n", ...}``."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        unset = re.match(r"^# CONFIG_(\w+) is not set$", line)
        if unset:
            values[unset.group(1)] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            name, value = line[len("CONFIG_") :].split("=", 1)
            values[name] = value
    return values


def config_mismatches(config_text: str, wanted: Mapping[str, str]) -> list[str]:
    """Options whose final value differs from the fragment: ``["KASAN: wanted y, got unset"]``.

    An option Kconfig dropped is absent from ``.config``; that counts as "n".
    """
    have = parse_config(config_text)
    problems = []
    for name, value in wanted.items():
        got = have.get(name, "n")
        if got != value:
            shown = "unset" if got == "n" else got
            problems.append(f"CONFIG_{name}: wanted {value}, got {shown}")
    return problems


def check_config(config_text: str, wanted: Mapping[str, str], where: Path | str) -> None:
    problems = config_mismatches(config_text, wanted)
    if problems:
        raise DebugConfigError(
            f"{where}: {len(problems)} option(s) of the debug fragment did not survive "
            f"'make olddefconfig' (a dependency is missing or the option was renamed in "
            f"this kernel): {'; '.join(problems)}. Add the missing dependency to "
            "GUEST_OPTIONS/DEBUG_OPTIONS in lab/build/debug_kernel.py (see 'make menuconfig', "
            "search for the option) and bump nothing: the fragment is part of the cache key"
        )


# -- naming and keys -----------------------------------------------------------


def debug_series(name: str) -> str | None:
    """``"6.12"`` for ``"6.12-debug"``, else None."""
    match = _DEBUG_NAME.match(name.strip())
    return match["series"] if match else None


def debug_name(series: str) -> str:
    return f"{series}{DEBUG_SUFFIX}"


def cache_key(source_version: str, fragment: str, release: str,
              recipe: str = RECIPE_VERSION) -> str:  # fmt: skip
    """The content address of a build: what makes two trees differ, nothing else."""
    material = json.dumps(
        {
            "source": source_version,
            "fragment": hashlib.sha256(fragment.encode()).hexdigest(),
            "release": release,
            "recipe": recipe,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def source_deb(entry: KernelEntry) -> DebFile:
    """The ``linux-source-X.Y`` .deb built from the same source upload as ``entry``.

    The reduced archive indices keep only image/headers paragraphs, so the
    file is located like pool-derived headers are: same version, in the pool
    directory of the ``linux`` source package, next to ``linux-headers-*-common``.
    It has no index hash; :func:`lab.catalogue.archive.download_deb` keeps the hash
    taken at download time in a sidecar, so later corruption is still caught.
    """
    common = [d for d in entry.headers if d.package.endswith("-common")]
    if not common:
        raise DebugKernelError(
            f"{entry.series}: no linux-headers-*-common for {entry.version} in the catalogue, "
            "so the source package cannot be located; rerun with --refresh"
        )
    directory = common[0].path.rsplit("/", 1)[0]
    package = f"linux-source-{entry.series}"
    path = f"{directory}/{package}_{entry.version}_all.deb"
    return DebFile(package, entry.version, path, common[0].mirror, None, None)


@dataclass(frozen=True)
class DebugSpec:
    """What one debug kernel is made of (known before it is built)."""

    series: str  # "6.12"
    release: str  # userspace it is built in: the kernel's own release
    source: DebFile  # linux-source-6.12 of exactly the catalogue's 6.12 version
    fragment: str  # config_fragment() text

    @property
    def name(self) -> str:
        return debug_name(self.series)

    @property
    def key(self) -> str:
        return cache_key(self.source.version, self.fragment, self.release)

    @property
    def entry_name(self) -> str:
        return f"{self.name}-{self.key}"


def debug_spec(entry: KernelEntry, fragment: str | None = None) -> DebugSpec:
    if entry.series not in DEBUG_SERIES:
        raise UnknownKernelError(
            f"no debug kernel recipe for {entry.series}: choose one of "
            f"{', '.join(debug_name(s) for s in DEBUG_SERIES)}"
        )
    return DebugSpec(entry.series, entry.release, source_deb(entry), fragment or config_fragment())


# -- the store -------------------------------------------------------------------


@dataclass
class _Progress:
    """Periodic ``phase: N files compiled, elapsed`` lines while make runs."""

    label: str
    phase: str
    say: Say
    started: float
    compiled: int = 0
    last_file: str = ""
    last_report: float = 0.0

    def line(self, text: str, now: float) -> None:
        match = _COMPILED.match(text)
        if match:
            self.compiled += 1
            self.last_file = match.group(1)
        if now - self.last_report >= PROGRESS_SECONDS:
            self.last_report = now
            self.say(self.summary(now))

    def summary(self, now: float) -> str:
        elapsed = int(now - self.started)
        last = f" (last: {self.last_file})" if self.last_file else ""
        return (
            f"[{self.label}] {self.phase}: {self.compiled} files compiled, "
            f"{elapsed // 60}m{elapsed % 60:02d}s{last}"
        )


class DebugKernelStore:
    """Debug kernel trees under ``cache_root()/debug-kernels``."""

    def __init__(self, root: Path | None = None, jobs: int | None = None) -> None:
        self.root = (root or cache_root()) / "debug-kernels"
        self.jobs = jobs or len(os.sched_getaffinity(0)) or 1

    # -- lookup ---------------------------------------------------------------

    def path(self, spec: DebugSpec) -> Path:
        return self.root / spec.entry_name

    def cached(self, spec: DebugSpec) -> Path | None:
        """The verified entry for ``spec``, or None (absent or corrupt)."""
        path = self.path(spec)
        if not path.exists():
            return None
        try:
            self.verify(path)
        except CacheCorruptError:
            return None
        return path

    @staticmethod
    def verify(path: Path) -> dict[str, object]:
        """Check ``build.json`` and the files it hashes; CacheCorruptError on a mismatch."""
        try:
            record = json.loads((path / "build.json").read_text())
            files = record["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheCorruptError(f"{path}: unreadable build.json ({exc})") from exc
        tree = path / "tree"
        for rel, digest in files.items():
            target = tree / rel
            if not target.is_file() or sha256_file(target) != digest:
                raise CacheCorruptError(f"{path}: {rel} is missing or changed since the build")
        if not (tree / "modules.order").is_file():
            raise CacheCorruptError(f"{path}: the tree lost modules.order")
        return dict(record)

    def kernel(self, spec: DebugSpec, path: Path) -> LocalKernel:
        local = resolve_local(path / "tree")
        return LocalKernel(
            local.path, local.kernel_release, local.bzimage, local.module_symvers,
            release=spec.release, label=spec.name,
        )  # fmt: skip

    def get(
        self, spec: DebugSpec, mirror: Mirror, say: Say, *, rebuild: bool = False
    ) -> LocalKernel:
        """The debug kernel of ``spec``, built first if it is not cached (or corrupt)."""
        final = self.path(spec)
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.root / f".{spec.entry_name}.lock"):
            reuse_or_rebuild(
                final, rebuild, self.verify, lambda: self._build(spec, mirror, final, say),
                lambda msg: say(f"[{spec.name}] {msg}"),
            )  # fmt: skip
            return self.kernel(spec, final)

    def entries(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(
            p for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and not p.name.startswith("builder-")
        )  # fmt: skip

    # -- the builder rootfs -----------------------------------------------------

    def builder(self, release: str, mirror: Mirror, say: Say, log: IO[bytes]) -> Path:
        """A ``release`` rootfs with the build dependencies (made once, then reused)."""
        material = json.dumps(
            [release, BUILD_PACKAGES, mirror.archive, mirror.security, RECIPE_VERSION]
        )
        key = hashlib.sha256(material.encode()).hexdigest()[:12]
        final = self.root / f"builder-{release}-{key}"
        marker = final / ".vhba-lab-complete"
        with locked(self.root / f".builder-{release}-{key}.lock"):
            if marker.is_file() and (final / "usr/bin/make").exists():
                return final
            if final.exists():
                say(f"[builder] {final.name} is incomplete, rebuilding it")
                shutil.rmtree(final)
            work = Path(tempfile.mkdtemp(prefix=f".builder-{release}-", dir=self.root))
            tree = work / "tree"
            say(f"[builder] mmdebstrap {release} + {len(BUILD_PACKAGES)} build packages")
            cmd = [
                "mmdebstrap", "--mode=root", "--variant=apt",
                '--aptopt=Acquire::Check-Valid-Until "false"',
                f"--include={','.join(BUILD_PACKAGES)}",
                release, str(tree), *apt_sources_for(release, mirror),
            ]  # fmt: skip
            try:
                _run_logged(cmd, log, "the builder rootfs")
                (tree / "build").mkdir(exist_ok=True)
                marker_in = tree / marker.name
                marker_in.write_text(json.dumps({"release": release, "key": key}) + "\n")
                os.replace(tree, final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return final

    # -- building ---------------------------------------------------------------

    def _build(self, spec: DebugSpec, mirror: Mirror, final: Path, say: Say) -> None:
        work = Path(tempfile.mkdtemp(prefix=f".{spec.entry_name}-", dir=self.root))
        log_path = work / "build.log"
        phases: dict[str, float] = {}
        started = time.monotonic()
        inside: Path | None = None
        builder: Path | None = None
        try:
            with log_path.open("ab") as log:

                def phase(name: str, since: float) -> None:
                    phases[name] = round(time.monotonic() - since, 1)
                    say(f"[{spec.name}] {name} done in {phases[name]:.0f} s")

                t = time.monotonic()
                builder = self.builder(spec.release, mirror, say, log)
                phase("builder", t)

                t = time.monotonic()
                say(f"[{spec.name}] fetching {spec.source.package} {spec.source.version}")
                if not pool_exists(spec.source.mirror, spec.source.path):
                    raise DebugKernelError(
                        f"{spec.source.url} is not on the mirror: the source upload of "
                        f"{spec.source.version} may be gone; rerun with --refresh"
                    )
                deb = download_deb(spec.source, cache_root() / "debs")
                phase("fetch", t)

                t = time.monotonic()
                inside = Path("/build") / work.name
                src = builder / inside.relative_to("/")
                self._unpack(deb, spec, src, work, log)
                (src / "vhba-debug.config").write_text(spec.fragment)
                phase("unpack", t)

                t = time.monotonic()
                say(f"[{spec.name}] configuring (defconfig + kvm_guest.config + fragment)")
                script = " && ".join([
                    "make defconfig",
                    "make kvm_guest.config",
                    "scripts/kconfig/merge_config.sh -m .config vhba-debug.config",
                    "make olddefconfig",
                ])  # fmt: skip
                self._chroot(builder, inside, script, log, None)
                config_text = (src / ".config").read_text()
                check_config(config_text, parse_config(spec.fragment), src / ".config")
                phase("config", t)

                t = time.monotonic()
                say(f"[{spec.name}] compiling with -j{self.jobs} under nice -n 19")
                progress = _Progress(spec.name, "build", say, t)
                make = f"nice -n 19 make -j{self.jobs} bzImage modules"
                self._chroot(builder, inside, make, log, progress)
                say(progress.summary(time.monotonic()))
                phase("build", t)
                gcc = self._capture(builder, "gcc --version | head -n 1")

            tree = work / "tree"
            os.replace(src, tree)
            inside = None
            for required in ("modules.order", "Module.symvers", "include/config/kernel.release"):
                if not (tree / required).is_file():
                    raise DebugKernelError(
                        f"make finished but {required} is missing in {tree}; see {log_path}"
                    )
            files = {
                rel: sha256_file(tree / rel)
                for rel in ("arch/x86/boot/bzImage", "Module.symvers", ".config")
            }
            record = {
                "name": spec.name,
                "key": spec.key,
                "recipe": RECIPE_VERSION,
                "series": spec.series,
                "release": spec.release,
                "source": {
                    "package": spec.source.package,
                    "version": spec.source.version,
                    "sha256": sha256_file(deb),
                },
                "kernel_release": (tree / "include/config/kernel.release").read_text().strip(),
                "gcc": gcc,
                "fragment_sha256": hashlib.sha256(spec.fragment.encode()).hexdigest(),
                "config_sha256": files[".config"],
                "jobs": self.jobs,
                "nice": 19,
                "files_compiled": progress.compiled,
                "phases_seconds": phases,
                "total_seconds": round(time.monotonic() - started, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files,
            }
            (work / "build.json").write_text(json.dumps(record, indent=2) + "\n")
            (work / "vhba-debug.config").write_text(spec.fragment)
            os.replace(work, final)
        except BaseException:
            if log_path.exists():
                shutil.copy2(log_path, self.root / f"{spec.entry_name}.failed-build.log")
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            if inside is not None and builder is not None:
                shutil.rmtree(builder / inside.relative_to("/"), ignore_errors=True)

    @staticmethod
    def _unpack(deb: Path, spec: DebugSpec, src: Path, work: Path, log: IO[bytes]) -> None:
        """``dpkg-deb -x`` the source package, then untar its tarball into ``src``."""
        unpacked = work / "deb"
        _run_logged(["dpkg-deb", "-x", str(deb), str(unpacked)], log, "unpacking the .deb")
        tarballs = sorted((unpacked / "usr/src").glob("linux-source-*.tar.*"))
        if not tarballs:
            raise DebugKernelError(
                f"{deb} has no /usr/src/linux-source-*.tar.*: not a kernel source package"
            )
        src.mkdir(parents=True)
        _run_logged(
            ["tar", "-C", str(src), "--strip-components=1", "-xf", str(tarballs[0])],
            log, "unpacking the kernel source",
        )  # fmt: skip
        shutil.rmtree(unpacked)

    @staticmethod
    def _wrap(builder: Path, inside: Path | None, script: str) -> list[str]:
        """Run ``script`` in the builder by chroot, in a private mount namespace.

        /proc and /dev are mounted only inside the namespace, so they vanish with
        the build even when it is killed, and parallel builds never collide.
        """
        root = shlex.quote(str(builder))
        body = f"cd {shlex.quote(str(inside))} && {script}" if inside else script
        return [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount -t proc proc {root}/proc && mount --bind /dev {root}/dev && "
            f"exec chroot {root} sh -c {shlex.quote(body)}",
        ]  # fmt: skip

    @staticmethod
    def _env() -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C",
            "HOME": "/root",
            # Keep the host's user and host name out of the kernel's version string.
            "KBUILD_BUILD_USER": "vhba-lab",
            "KBUILD_BUILD_HOST": "vhba-lab",
        }

    def _chroot(
        self, builder: Path, inside: Path, script: str, log: IO[bytes], progress: _Progress | None
    ) -> None:
        cmd = self._wrap(builder, inside, script)
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self._env()
        )
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                log.write(raw)
                if progress is not None:
                    progress.line(raw.decode(errors="replace"), time.monotonic())
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        log.flush()
        if rc != 0:
            raise DebugKernelError(
                f"'{script}' failed in the {builder.name} chroot (exit {rc}); the last lines:\n"
                + _tail(log)
            )

    def _capture(self, builder: Path, script: str) -> str:
        proc = subprocess.run(
            self._wrap(builder, None, script), capture_output=True, text=True, env=self._env()
        )
        return proc.stdout.strip()


def _tail(log: IO[bytes], lines: int = 15) -> str:
    name = getattr(log, "name", None)
    if not isinstance(name, str):
        return ""
    text = Path(name).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) + f"\n(full log: {name})"


def _run_logged(cmd: list[str], log: IO[bytes], what: str) -> None:
    log.write(f"$ {shlex.join(cmd)}\n".encode())
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise DebugKernelError(f"{what} failed (exit {proc.returncode}):\n{_tail(log)}")


def known_debug_names() -> list[str]:
    return [debug_name(series) for series in DEBUG_SERIES]


@dataclass(frozen=True)
class DebugState:
    """One debug kernel as ``vhba-lab kernels`` shows it."""

    spec: DebugSpec
    path: Path | None  # the verified cache entry, None when not built yet
    record: Mapping[str, object]  # its build.json ({} when not built)

    @property
    def kernel_release(self) -> str:
        return str(self.record.get("kernel_release", ""))

    @property
    def note(self) -> str:
        if self.path is None:
            return "built from source on first use (30-90 min on 2 cores)"
        minutes = float(str(self.record.get("total_seconds", 0))) / 60
        return f"built in {minutes:.0f} min: {self.path / 'tree'}"


def debug_states(store: DebugKernelStore, specs: Iterable[DebugSpec]) -> list[DebugState]:
    states = []
    for spec in specs:
        path = store.cached(spec)
        record = DebugKernelStore.verify(path) if path else {}
        states.append(DebugState(spec, path, record))
    return states


def format_debug_table(states: Iterable[DebugState]) -> Table:
    """The debug kernels as a rich table, under the catalogue's in ``vhba-lab kernels``."""
    table = Table(title="Debug kernels (Debian source + KASAN/UBSAN/lockdep/kmemleak)")
    for column in ("name", "source", "uname -r", "release", "state"):
        table.add_column(column, no_wrap=True)
    for state in states:
        spec = state.spec
        table.add_row(
            spec.name, f"{spec.source.package} {spec.source.version}",
            state.kernel_release or "-", spec.release, state.note,
        )  # fmt: skip
    return table
