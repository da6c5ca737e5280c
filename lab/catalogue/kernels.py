"""The kernel catalogue: every amd64 Debian kernel series the mirror offers.

The lab tests the module against *real distribution kernels*, so the list of
kernels is read from the mirror's indices rather than written down: a new
backport or point release shows up by itself.  For each upstream series
(``6.12``, ``7.1`` ...) the newest Debian build wins; its userspace release is
the one whose packages it is meant to be installed with.

Rules worth knowing, each because the archive is less regular than it looks:

* Only the generic flavour counts (``linux-image-<abi>`` with ``<abi>``
  ending in ``-amd64``); ``-cloud``/``-rt`` flavours, ``-dbg`` packages and
  the ``linux-image-amd64`` meta package are not kernels of their own.  An
  ``-unsigned`` image is used only when no signed image of the same version
  exists.
* Same version in several suites: the suite of the image's own release wins
  (``+deb14`` found in both forky and sid belongs to forky), then scan order.
* Headers must be of *exactly* the image's version.  The index is searched
  first (the image's suite, then the other suites of the same mirror, which
  share one pool).  Some suites list images without their headers (trixie-
  backports 6.16 .. 7.1); then the ``.deb`` names are derived from the
  image's version and checked with HTTP HEAD in the pool directory of the
  image's source package (from ``Built-Using``, since signed images live
  under ``linux-signed-amd64``).  A series whose headers cannot be found is
  kept and marked ``headers_source == "missing"``.
* Since 6.18/6.19 ``linux-image-<abi>`` is a small package that depends on
  ``linux-binary-``, ``linux-modules-`` and ``linux-base-<abi>`` of the same
  version; those are resolved like headers into ``KernelEntry.image_parts``
  (the index again lacks some of them), because installing the image from
  ``.deb`` files needs all of them (any not found are listed in
  ``KernelEntry.parts_missing``).

Names accepted by :meth:`Catalogue.resolve`: a series (``6.12``); a release
(``bullseye``, ``bookworm``, ``trixie``, ``forky``, ``sid``: the kernel that
release's ``linux-image-amd64`` meta package points to in its own suites,
never backports); any scanned suite name (``trixie-backports``,
``experimental``: its newest kernel); an exact Debian version
(``6.12.57-1``); an ABI (``6.12.57+deb13-amd64``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from debian.deb822 import PkgRelation
from debian.debian_support import Version
from rich.table import Table

from lab.catalogue.apt_sources import Mirror, is_security_suite
from lab.catalogue.archive import (
    PoolCache,
    ProgressEvent,
    ProgressFn,
    SuiteIndex,
    Transport,
    archive_cache_dir,
    fetch_index,
    pool_exists,
)
from lab.config import ExtraSuite
from lab.errors import UnknownKernelError, UsageError

# Scanned in this order; the order also breaks ties between equal builds.
SCAN_SUITES: tuple[str, ...] = (
    "bullseye", "bullseye-security", "bullseye-updates",
    "bookworm", "bookworm-security", "bookworm-updates", "bookworm-backports",
    "trixie", "trixie-security", "trixie-updates", "trixie-backports",
    "forky", "forky-security",
    "sid", "experimental",
)  # fmt: skip
RELEASES: tuple[str, ...] = ("jessie", "stretch", "buster", "bullseye", "bookworm", "trixie",
                             "forky", "duke", "sid")  # fmt: skip
# "+deb13", "~deb12u1", "~bpo13+1": the Debian release number a build targets.
_DEB_NUMBER = {8: "jessie", 9: "stretch", 10: "buster", 11: "bullseye", 12: "bookworm",
               13: "trixie", 14: "forky", 15: "duke"}  # fmt: skip
_RELEASE_MARK = re.compile(r"(?:\+deb|~deb|~bpo)(\d+)")
_GENERIC_ABI = re.compile(r"^\d+\.\d+[^-]*(?:-\d+)?-amd64$")  # 5.10.0-30-amd64, 7.3-amd64
_SERIES = re.compile(r"^(\d+)\.(\d+)")
_PART = re.compile(r"^linux-(base|binary|modules)-")
# A contributor's own tree is booted with the current stable userspace: new
# enough (kmod, initramfs-tools, gcc-14) for any kernel a contributor builds
# today, and supported, unlike sid which moves under the lab's cache.
LOCAL_USERSPACE_RELEASE = "trixie"
_WORKERS = 8


@dataclass(frozen=True)
class DebFile:
    package: str  # linux-headers-6.12.57+deb13-amd64
    version: str  # 6.12.57-1
    path: str  # relative to the mirror root: pool/main/l/linux/....deb
    mirror: str  # base URI the file is fetched from
    sha256: str | None  # from the index; None when derived from the pool
    size: int | None

    @property
    def url(self) -> str:
        return f"{self.mirror.rstrip('/')}/{self.path}"


@dataclass(frozen=True)
class KernelEntry:
    series: str  # "6.12"   (upstream major.minor)
    version: str  # "6.12.57-1" (Debian package version)
    abi: str  # "6.12.57+deb13-amd64" (= uname -r in the guest)
    suite: str  # suite it was found in, e.g. "trixie-security"
    release: str  # userspace release of its image: bullseye/bookworm/trixie/forky/sid
    image: DebFile  # linux-image-<abi> package
    headers: tuple[DebFile, ...]  # headers-<abi>, headers-common, kbuild: same source version
    headers_source: str = "indexed"  # "indexed" | "pool" (derived + HEAD) | "missing"
    image_parts: tuple[DebFile, ...] = ()  # linux-binary/-modules/-base-<abi> of split images
    parts_missing: tuple[str, ...] = ()  # image parts found neither in an index nor the pool

    @property
    def headers_missing(self) -> bool:
        return self.headers_source == "missing"


@dataclass(frozen=True, eq=False)
class _Build:
    """An image found in one suite, before its headers are looked up."""

    series: str
    version: str
    abi: str
    suite: str
    release: str
    mirror: str
    order: int  # position of the suite in the scan list
    paragraph: Mapping[str, str] = field(repr=False)

    @property
    def own_release(self) -> str | None:
        match = _RELEASE_MARK.search(self.abi) or _RELEASE_MARK.search(self.version)
        return _DEB_NUMBER.get(int(match.group(1))) if match else None

    def preference(self) -> tuple[Version, bool, int]:
        """Sort key: newer version, then own-release suite, then earlier suite."""
        return (Version(self.version), self.own_release == self.release, -self.order)


@dataclass(frozen=True)
class _Plan:
    suite: str
    mirror: str
    release: str


def suite_release(suite: str) -> str:
    """The userspace release of a suite: backports install into their base release."""
    base = re.split(r"[-/]", suite, maxsplit=1)[0]
    return "sid" if base in ("sid", "experimental", "unstable") else base


def series_of(version: str) -> str:
    match = _SERIES.match(Version(version).upstream_version or "")
    if not match:
        raise ValueError(f"not a kernel version: {version}")
    return f"{match.group(1)}.{match.group(2)}"


def _series_key(series: str) -> tuple[int, ...]:
    return tuple(int(part) for part in series.split("."))


def _relations(field_value: str | None) -> list[dict[str, object]]:
    """First alternative of each relation in a Depends field."""
    if not field_value:
        return []
    return [alternatives[0] for alternatives in PkgRelation.parse_relations(field_value)]


def images_in(index: SuiteIndex, release: str, order: int) -> list[_Build]:
    """Generic amd64 kernel images of one suite (signed preferred over unsigned)."""
    found: dict[tuple[str, str], _Build] = {}
    for paragraph in index.packages:
        name = paragraph["Package"]
        if not name.startswith("linux-image-") or paragraph.get("Architecture") != "amd64":
            continue
        abi = name[len("linux-image-") :]
        unsigned = abi.endswith("-unsigned")
        if unsigned:
            abi = abi[: -len("-unsigned")]
        if not _GENERIC_ABI.match(abi):
            continue
        key = (abi, paragraph["Version"])
        if unsigned and key in found:
            continue
        try:
            series = series_of(paragraph["Version"])
        except ValueError:
            continue
        found[key] = _Build(
            series, paragraph["Version"], abi, index.suite, release, index.mirror, order, paragraph
        )
    return list(found.values())


def _deb(paragraph: Mapping[str, str], mirror: str) -> DebFile:
    size = paragraph.get("Size")
    return DebFile(
        package=paragraph["Package"],
        version=paragraph["Version"],
        path=paragraph["Filename"],
        mirror=mirror,
        sha256=paragraph.get("SHA256"),
        size=int(size) if size and size.isdigit() else None,
    )


class Catalogue:
    """Kernel builds found on the mirror, with name resolution."""

    def __init__(
        self,
        indices: Sequence[SuiteIndex],
        plans: Sequence[_Plan],
        *,
        pool: PoolCache | None = None,
        transport: Transport | None = None,
        skipped: Sequence[str] = (),
    ) -> None:
        self.indices = tuple(indices)
        self.skipped = tuple(skipped)  # suites not scanned, with the reason
        self._pool = pool
        self._transport = transport
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, str, str], KernelEntry] = {}
        # Keyed by (mirror, suite): an extra suite may reuse a name on another mirror.
        self._releases = {(plan.mirror, plan.suite): plan.release for plan in plans}
        self.builds: list[_Build] = []
        for order, index in enumerate(self.indices):
            if not index.absent:
                self.builds.extend(
                    images_in(index, self._releases[(index.mirror, index.suite)], order)
                )
        newest: dict[str, _Build] = {}
        for build in self.builds:
            best = newest.get(build.series)
            if best is None or build.preference() > best.preference():
                newest[build.series] = build
        self._newest = newest
        self._entries: list[KernelEntry] | None = None

    @property
    def absent_suites(self) -> tuple[str, ...]:
        return tuple(index.suite for index in self.indices if index.absent)

    @classmethod
    def load(
        cls,
        mirror: Mirror,
        *,
        cache_dir: Path | None = None,
        refresh: bool = False,
        extra_suites: Iterable[ExtraSuite] = (),
        progress: ProgressFn | None = None,
        transport: Transport | None = None,
        suites: Sequence[str] = SCAN_SUITES,
    ) -> Catalogue:
        """Fetch (or read from cache) every suite's index and resolve each series."""
        plans: list[_Plan] = []
        skipped: list[str] = []
        for suite in suites:
            if is_security_suite(suite) and mirror.security is None:
                skipped.append(f"{suite} (no security mirror configured)")
                continue
            plans.append(_Plan(suite, mirror.uri_for(suite), suite_release(suite)))
        plans.extend(_Plan(extra.suite, extra.uri, extra.release) for extra in extra_suites)

        root = archive_cache_dir(cache_dir)
        done = 0
        lock = threading.Lock()

        def fetch(plan: _Plan) -> SuiteIndex:
            nonlocal done
            index = fetch_index(
                plan.mirror, plan.suite, cache_dir=root, refresh=refresh, transport=transport
            )
            if progress is not None:
                with lock:
                    done += 1
                    progress(
                        ProgressEvent(
                            "kernel catalogue", done, len(plans), f"{plan.suite}: {index.note}"
                        )
                    )
            return index

        with ThreadPoolExecutor(_WORKERS) as pool_threads:
            indices = list(pool_threads.map(fetch, plans))
        pool = PoolCache(root / "pool-heads.json")
        if refresh:
            pool.forget()
        catalogue = cls(indices, plans, pool=pool, transport=transport, skipped=skipped)
        catalogue.entries()  # resolve headers now, while the HEAD answers are saved below
        pool.save()
        return catalogue

    # -- entries ---------------------------------------------------------

    def entries(self) -> list[KernelEntry]:
        """The newest build of every series, oldest series first."""
        if self._entries is None:
            ordered = sorted(self._newest.values(), key=lambda b: _series_key(b.series))
            with ThreadPoolExecutor(_WORKERS) as threads:
                self._entries = list(threads.map(self._entry, ordered))
        return list(self._entries)

    def _entry(self, build: _Build) -> KernelEntry:
        key = (build.suite, build.abi, build.version)
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        entry = self._resolve_files(build)
        with self._lock:
            self._memo[key] = entry
        if self._pool is not None:
            self._pool.save()  # HEAD answers of late resolutions are kept too
        return entry

    def _same_mirror(self, build: _Build) -> list[SuiteIndex]:
        own = [i for i in self.indices if i.suite == build.suite and i.mirror == build.mirror]
        rest = [i for i in self.indices if i.mirror == build.mirror and i not in own]
        return [i for i in own + rest if not i.absent]

    def _indexed(self, build: _Build, package: str) -> DebFile | None:
        for index in self._same_mirror(build):
            hits = index.find(package, build.version)
            if hits:
                return _deb(hits[0], build.mirror)
        return None

    def _pool_dirs(self, build: _Build) -> list[str]:
        """Pool directories of the image's source package, then of the image itself."""
        image_dir = build.paragraph["Filename"].rsplit("/", 1)[0]
        source = None
        for relation in _relations(build.paragraph.get("Built-Using")):
            source = str(relation["name"])
            break
        sources = [source] if source else []
        signed = build.paragraph.get("Source", "linux").split()[0]
        if signed.startswith("linux-signed-"):
            # No Built-Using on some signed images: linux-signed-amd64 is built
            # from linux, linux-signed-6.12-amd64 from linux-6.12.
            flavour = signed[len("linux-signed-") :].removesuffix("amd64").rstrip("-")
            sources.append(f"linux-{flavour}" if flavour else "linux")
        else:
            sources.append(signed)
        prefix = image_dir.split("/")[:-2]
        dirs = []
        for name in sources:
            letter = name[:4] if name.startswith("lib") else name[0]
            dirs.append("/".join([*prefix, letter, name]))
        dirs.append(image_dir)
        return list(dict.fromkeys(dirs))

    def _from_pool(
        self, build: _Build, names: Sequence[str], arch: str, dirs: Sequence[str]
    ) -> DebFile | None:
        for name in names:
            for directory in dirs:
                path = f"{directory}/{name}_{build.version}_{arch}.deb"
                if pool_exists(build.mirror, path, transport=self._transport, cache=self._pool):
                    return DebFile(name, build.version, path, build.mirror, None, None)
        return None

    def _resolve_files(self, build: _Build) -> KernelEntry:
        kver = build.abi[: -len("-amd64")]
        dirs = self._pool_dirs(build)
        used_pool = False
        missing = False

        def find(names: Sequence[str], arch: str, search_dirs: Sequence[str]) -> DebFile | None:
            nonlocal used_pool, missing
            for name in names:
                hit = self._indexed(build, name)
                if hit is not None:
                    return hit
            hit = self._from_pool(build, names, arch, search_dirs)
            if hit is not None:
                used_pool = True
            else:
                missing = True
            return hit

        arch_headers = find([f"linux-headers-{build.abi}"], "amd64", dirs)
        common_names = [f"linux-headers-{kver}-common"]
        kbuild_names = [f"linux-kbuild-{kver}", f"linux-kbuild-{build.series}"]
        if arch_headers is not None and arch_headers.sha256 is not None:
            # The index says exactly which common and kbuild packages go with it.
            header_paragraph = self._paragraph(build, arch_headers.package)
            deps = [str(r["name"]) for r in _relations(header_paragraph.get("Depends"))]
            common_names = [d for d in deps if re.match(r"^linux-headers-.*-common$", d)] or (
                common_names
            )
            kbuild_names = [d for d in deps if d.startswith("linux-kbuild-")] or kbuild_names
        common = find(common_names, "all", dirs)
        kbuild = find(kbuild_names, "amd64", dirs)
        headers = tuple(d for d in (arch_headers, common, kbuild) if d is not None)
        source = "missing" if missing else "pool" if used_pool else "indexed"

        parts: list[DebFile] = []
        parts_missing: list[str] = []
        for relation in _relations(build.paragraph.get("Depends")):
            name = str(relation["name"])
            if _PART.match(name) and name.endswith(build.abi):
                # linux-binary is built by the signing source, so look next to the image first.
                found = find([name], "amd64", [*reversed(dirs)] if "binary" in name else dirs)
                if found is not None:
                    parts.append(found)
                else:
                    parts_missing.append(name)

        return KernelEntry(
            series=build.series,
            version=build.version,
            abi=build.abi,
            suite=build.suite,
            release=build.release,
            image=_deb(build.paragraph, build.mirror),
            headers=headers,
            headers_source=source,
            image_parts=tuple(parts),
            parts_missing=tuple(parts_missing),
        )

    def _paragraph(self, build: _Build, package: str) -> Mapping[str, str]:
        for index in self._same_mirror(build):
            hits = index.find(package, build.version)
            if hits:
                return hits[0]
        return {}

    # -- resolution ------------------------------------------------------

    def release_names(self) -> list[str]:
        """Releases that have a kernel in their own (non-backports) suites."""
        names = {
            b.release for b in self.builds if not b.suite.endswith("-backports") and
            b.suite != "experimental"
        }  # fmt: skip
        order = {name: i for i, name in enumerate(RELEASES)}
        return sorted(names, key=lambda n: (order.get(n, -1), n))

    def _family(self, release: str) -> list[SuiteIndex]:
        return [
            i
            for i in self.indices
            if not i.absent
            and self._releases.get((i.mirror, i.suite)) == release
            and "backports" not in i.suite
            and i.suite != "experimental"
        ]

    def _release_default(self, release: str) -> _Build | None:
        family = self._family(release)
        suites = {i.suite for i in family}
        candidates = [b for b in self.builds if b.suite in suites]
        metas = [
            (Version(p["Version"]), i.suite, p) for i in family for p in i.find("linux-image-amd64")
        ]
        if metas:
            _, _, meta = max(metas, key=lambda m: m[0])
            for relation in _relations(meta.get("Depends")):
                name = str(relation["name"])
                if name.startswith("linux-image-"):
                    abi = name[len("linux-image-") :]
                    matching = [b for b in candidates if b.abi == abi]
                    if matching:
                        return max(matching, key=_Build.preference)
        return max(candidates, key=_Build.preference) if candidates else None

    def _unknown(self, name: str) -> UnknownKernelError:
        entries = self.entries()
        choices = ", ".join([*(e.series for e in entries), *self.release_names()])
        example = entries[-1] if entries else None
        version = example.version if example else "6.12.57-1"
        abi = example.abi if example else "6.12.57+deb13-amd64"
        return UnknownKernelError(
            f"unknown kernel {name!r}: choose one of {choices}, an exact version "
            f"(e.g. {version}), an ABI (e.g. {abi}), a debug kernel built from Debian's "
            "source (e.g. 6.12-debug, see 'vhba-lab debug-kernel list'), or a kernel build dir"
        )

    def resolve(self, name: str) -> KernelEntry:
        """One kernel by series, release, suite, exact version or ABI."""
        name = name.strip()
        if name in self._newest:
            return self._entry(self._newest[name])
        if name in self.release_names():
            build = self._release_default(name)
            if build is not None:
                return self._entry(build)
        in_suite = [b for b in self.builds if b.suite == name]
        if in_suite:
            return self._entry(max(in_suite, key=_Build.preference))
        for attribute in ("version", "abi"):
            hits = [b for b in self.builds if getattr(b, attribute) == name]
            if hits:
                return self._entry(max(hits, key=_Build.preference))
        raise self._unknown(name)

    def resolve_many(self, names: Iterable[str]) -> list[KernelEntry]:
        """Several names (``all`` = every series), duplicates dropped, order kept."""
        result: list[KernelEntry] = []
        seen: set[tuple[str, str]] = set()
        for name in names:
            for entry in self.entries() if name.strip() == "all" else [self.resolve(name)]:
                if (entry.abi, entry.version) not in seen:
                    seen.add((entry.abi, entry.version))
                    result.append(entry)
        return result


# -- a contributor's own kernel ------------------------------------------


@dataclass(frozen=True)
class LocalKernel:
    """A kernel build tree on the host, booted instead of a Debian package."""

    path: Path
    kernel_release: str  # include/config/kernel.release = uname -r in the guest
    bzimage: Path
    module_symvers: Path
    release: str = LOCAL_USERSPACE_RELEASE
    # A catalogue name for trees the lab builds itself ("6.12-debug"); it stands in
    # for the series in rows, work dirs and messages, so it never collides with the
    # Debian build of the same series.
    label: str | None = None

    @property
    def series(self) -> str:
        if self.label:
            return self.label
        match = _SERIES.match(self.kernel_release)
        return f"{match.group(1)}.{match.group(2)}" if match else self.kernel_release

    @property
    def abi(self) -> str:
        """Same meaning as KernelEntry.abi: what ``uname -r`` prints in the guest."""
        return self.kernel_release

    @property
    def version(self) -> str:
        return f"local:{self.path}"


def resolve_local(path: str | Path) -> LocalKernel:
    """Check that ``path`` is a built kernel tree and describe it."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(
            f"{root} is not a directory; pass a kernel build directory or a Debian kernel "
            "name such as 6.12 or trixie"
        )
    root = root.resolve()
    required = {
        "bzimage": root / "arch/x86/boot/bzImage",
        "release": root / "include/config/kernel.release",
        "symvers": root / "Module.symvers",
    }
    missing = [str(p.relative_to(root)) for p in required.values() if not p.is_file()]
    if missing:
        raise UsageError(
            f"{root} is not a built x86 kernel tree (missing {', '.join(missing)}); run "
            "'make -j$(nproc) bzImage modules' in it first, or pass a Debian kernel name"
        )
    kernel_release = required["release"].read_text(encoding="utf-8").strip()
    if not kernel_release:
        raise UsageError(f"{required['release']} is empty; rerun 'make bzImage modules' in {root}")
    return LocalKernel(root, kernel_release, required["bzimage"], required["symvers"])


# -- display -------------------------------------------------------------


def format_table(entries: Iterable[KernelEntry]) -> Table:
    """The catalogue as a rich table for ``vhba-lab kernels``."""
    table = Table(title="Debian amd64 kernels")
    for column in ("series", "version", "abi", "suite", "release", "headers"):
        table.add_column(column, no_wrap=True)
    styles = {"indexed": "green", "pool": "yellow", "missing": "bold red"}
    for entry in entries:
        source = entry.headers_source
        headers = f"[{styles[source]}]{source}[/]" if source in styles else source
        if entry.parts_missing:
            headers += " [bold red](image incomplete)[/]"
        table.add_row(entry.series, entry.version, entry.abi, entry.suite, entry.release, headers)
    return table
