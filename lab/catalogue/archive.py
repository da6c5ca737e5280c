"""Downloading and caching Debian archive indices and ``.deb`` files.

The catalogue needs a few hundred paragraphs out of indices that are tens of
megabytes, and it is consulted on every lab run, so each suite's index is
reduced once to the kernel-related paragraphs and kept as a small JSON file:

* ``dists/<suite>/InRelease`` is fetched first; its ``SHA256`` list is the
  trust anchor for ``main/binary-amd64/Packages.xz`` (``.gz`` fallback),
  whose hash and size must match before anything is parsed.  (The InRelease
  signature itself is not checked here: the URIs come from the host's own
  apt configuration.)
* The reduced index is written under ``cache_root()/archive/`` with a hash of
  its own content, re-verified on every read; a corrupt file is refetched.
* Within :data:`FRESH_SECONDS` the cache is used without touching the
  network.  After that the InRelease is refetched, and when it still lists
  the same Packages hash the cached reduction is simply re-stamped.
* A suite that does not exist on the mirror (HTTP 404, e.g. a release without
  ``-updates`` yet) is cached as *absent* rather than failing the run.
* When the network fails and a verified but stale cache exists, the stale
  cache is used and reported through the progress hook, so an offline rerun
  still works.

``.deb`` files are downloaded to a temporary name and renamed only after
their sha256 matched, so an interrupted download never looks cached.

All network access goes through a :class:`Transport`; unit tests inject a
fake one, the default is :class:`HttpTransport` (stdlib ``urllib``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from debian import deb822

from lab.catalogue.digest import sha256_file
from lab.errors import ArchiveError, CacheCorruptError
from lab.paths import cache_root

if TYPE_CHECKING:
    from lab.catalogue.kernels import DebFile

FRESH_SECONDS = 6 * 3600
CACHE_FORMAT = 1
ARCH = "amd64"
# Paragraphs the catalogue needs: images (incl. the linux-image-amd64 meta
# package), headers, kbuild, and the parts newer images are split into.
KEEP_PACKAGE = re.compile(r"^linux-(image|headers|kbuild|binary|modules|base)-")
KEEP_FIELDS = (
    "Package",
    "Version",
    "Architecture",
    "Source",
    "Built-Using",
    "Depends",
    "Filename",
    "Size",
    "SHA256",
)
_USER_AGENT = "vhba-lab/0.1 (+kernel catalogue)"


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long operation, for the CLI's progress display."""

    task: str  # "index trixie-backports", "download linux-image-...deb"
    done: int
    total: int | None
    note: str = ""  # "cached", "absent", "stale cache (offline)", ...


ProgressFn = Callable[[ProgressEvent], None]


class Transport(Protocol):
    """The three network operations the archive code needs."""

    def get(self, url: str) -> bytes | None:
        """The body, or ``None`` when the server says 404/410."""

    def head(self, url: str) -> bool:
        """Whether the URL exists."""

    def iter_content(self, url: str) -> tuple[int | None, Iterator[bytes]] | None:
        """``(length, chunks)`` for a large body, or ``None`` on 404/410."""


class HttpTransport:
    """:class:`Transport` over ``urllib`` with a few retries for flaky links."""

    def __init__(self, timeout: float = 60.0, attempts: int = 3, chunk: int = 1 << 20) -> None:
        self.timeout = timeout
        self.attempts = attempts
        self.chunk = chunk

    def _open(self, url: str, method: str) -> Any | None:
        last: Exception | None = None
        for attempt in range(self.attempts):
            request = urllib.request.Request(
                url, method=method, headers={"User-Agent": _USER_AGENT}
            )
            try:
                return urllib.request.urlopen(request, timeout=self.timeout)
            except urllib.error.HTTPError as error:
                if error.code in (404, 410):
                    return None
                last = error
                if error.code < 500:
                    break
            except (urllib.error.URLError, OSError) as error:
                last = error
            time.sleep(0.5 * (attempt + 1))
        raise ArchiveError(
            f"cannot fetch {url}: {last}; check the network, or choose another mirror with "
            "--mirror URI / VHBA_LAB_MIRROR"
        )

    def get(self, url: str) -> bytes | None:
        response = self._open(url, "GET")
        if response is None:
            return None
        with response:
            try:
                return response.read()
            except OSError as error:
                raise ArchiveError(
                    f"download of {url} broke off ({error}); rerun the command to retry"
                ) from error

    def head(self, url: str) -> bool:
        response = self._open(url, "HEAD")
        if response is None:
            return False
        response.close()
        return True

    def iter_content(self, url: str) -> tuple[int | None, Iterator[bytes]] | None:
        response = self._open(url, "GET")
        if response is None:
            return None
        length = response.headers.get("Content-Length")

        def chunks() -> Iterator[bytes]:
            with response:
                while True:
                    try:
                        block = response.read(self.chunk)
                    except OSError as error:
                        raise ArchiveError(
                            f"download of {url} broke off ({error}); rerun to retry"
                        ) from error
                    if not block:
                        return
                    yield block

        return (int(length) if length and length.isdigit() else None), chunks()


def archive_cache_dir(cache_dir: Path | None = None) -> Path:
    return cache_dir if cache_dir is not None else cache_root() / "archive"


def _slug(uri: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", uri.split("://", 1)[-1]).strip("_")


def _digest(payload: Mapping[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users/chroots
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SuiteIndex:
    """The kernel-related part of one suite's amd64 ``Packages`` index."""

    mirror: str
    suite: str
    absent: bool  # the suite does not exist on the mirror
    fetched_at: float
    packages: tuple[dict[str, str], ...] = ()
    packages_sha256: str | None = None  # of the Packages file this was cut from
    note: str = field(default="", compare=False)  # how this load was served

    def find(self, package: str, version: str | None = None) -> list[dict[str, str]]:
        return [
            p
            for p in self.packages
            if p["Package"] == package and (version is None or p.get("Version") == version)
        ]

    def payload(self) -> dict[str, Any]:
        return {
            "mirror": self.mirror,
            "suite": self.suite,
            "absent": self.absent,
            "fetched_at": self.fetched_at,
            "packages": list(self.packages),
            "packages_sha256": self.packages_sha256,
        }


def index_cache_path(cache_dir: Path, mirror: str, suite: str) -> Path:
    return cache_dir / "indices" / _slug(mirror) / f"{suite.replace('/', '_')}.json"


def save_index(path: Path, index: SuiteIndex) -> None:
    payload = index.payload()
    document = {"format": CACHE_FORMAT, "sha256": _digest(payload), "payload": payload}
    _write_atomic(path, json.dumps(document, separators=(",", ":")).encode())


def load_index(path: Path) -> SuiteIndex:
    """Read and verify a cached index; :class:`CacheCorruptError` if it fails."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        payload = document["payload"]
        ok = document.get("format") == CACHE_FORMAT and document.get("sha256") == _digest(payload)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CacheCorruptError(
            f"cached index {path} is unreadable ({error}); delete it or rerun with --refresh"
        ) from error
    if not ok:
        raise CacheCorruptError(
            f"cached index {path} failed its checksum; delete it or rerun with --refresh"
        )
    return SuiteIndex(
        mirror=payload["mirror"],
        suite=payload["suite"],
        absent=payload["absent"],
        fetched_at=payload["fetched_at"],
        packages=tuple(payload["packages"]),
        packages_sha256=payload["packages_sha256"],
    )


def reduce_packages(text: str) -> tuple[dict[str, str], ...]:
    """The kernel-related paragraphs of a ``Packages`` file, with only the fields we use."""
    kept: list[dict[str, str]] = []
    for chunk in text.split("\n\n"):
        chunk = chunk.strip("\n")
        if not chunk.startswith("Package: linux-"):
            continue
        name = chunk.split("\n", 1)[0][len("Package: ") :].strip()
        if not KEEP_PACKAGE.match(name) or name.endswith("-dbg"):
            continue
        paragraph = deb822.Packages(chunk)
        kept.append({key: paragraph[key] for key in KEEP_FIELDS if key in paragraph})
    return tuple(kept)


def release_hashes(text: bytes) -> dict[str, tuple[str, int]]:
    release = deb822.Release(text)
    return {
        entry["name"]: (entry["sha256"].lower(), int(entry["size"]))
        for entry in release.get("SHA256", [])
    }


def _fetch_packages(
    transport: Transport, base: str, suite: str, hashes: Mapping[str, tuple[str, int]]
) -> tuple[str, str] | None:
    """``(text, sha256)`` of the verified amd64 Packages index, or None if not listed."""
    stem = f"main/binary-{ARCH}/Packages"
    for suffix, decompress in ((".xz", lzma.decompress), (".gz", gzip.decompress), ("", bytes)):
        name = stem + suffix
        if name not in hashes:
            continue
        want_sha, want_size = hashes[name]
        url = f"{base}/dists/{suite}/{name}"
        for attempt in range(2):  # a second try rides out a mirror mid-sync
            data = transport.get(url)
            if data is None:
                break  # listed but not served: try the next compression
            got = hashlib.sha256(data).hexdigest()
            if got == want_sha and len(data) == want_size:
                return decompress(data).decode("utf-8", errors="replace"), want_sha
            if attempt == 1:
                raise ArchiveError(
                    f"{url} does not match its InRelease (sha256 {got}, expected {want_sha}); "
                    "the mirror is probably mid-sync: retry in a few minutes or choose another "
                    "mirror with --mirror URI"
                )
    return None


def fetch_index(
    mirror: str,
    suite: str,
    *,
    cache_dir: Path | None = None,
    refresh: bool = False,
    transport: Transport | None = None,
    progress: ProgressFn | None = None,
    max_age: float = FRESH_SECONDS,
    now: Callable[[], float] = time.time,
) -> SuiteIndex:
    """The reduced index of ``suite`` on ``mirror``, from cache when fresh enough."""
    net = transport if transport is not None else HttpTransport()
    path = index_cache_path(archive_cache_dir(cache_dir), mirror, suite)
    task = f"index {suite}"

    def report(note: str) -> None:
        if progress is not None:
            progress(ProgressEvent(task, 1, 1, note))

    cached: SuiteIndex | None = None
    corrupt: CacheCorruptError | None = None
    if path.exists():
        try:
            cached = load_index(path)
        except CacheCorruptError as error:
            corrupt = error
    if cached is not None and not refresh and now() - cached.fetched_at < max_age:
        report("cached")
        return cached

    def finish(index: SuiteIndex, note: str) -> SuiteIndex:
        save_index(path, index)
        report(note)
        return replace(index, note=note)

    base = mirror.rstrip("/")
    try:
        release = net.get(f"{base}/dists/{suite}/InRelease")
        if release is None:  # very old suites only have the detached form
            release = net.get(f"{base}/dists/{suite}/Release")
        if release is None:
            return finish(SuiteIndex(mirror, suite, True, now()), "absent")
        hashes = release_hashes(release)
        listed = hashes.get(f"main/binary-{ARCH}/Packages.xz") or hashes.get(
            f"main/binary-{ARCH}/Packages.gz"
        )
        if cached is not None and listed is not None and cached.packages_sha256 == listed[0]:
            return finish(replace(cached, fetched_at=now()), "unchanged")
        fetched = _fetch_packages(net, base, suite, hashes)
    except ArchiveError:
        if cached is not None:
            report("stale cache (mirror unreachable)")
            return replace(cached, note="stale")
        if corrupt is not None:
            raise corrupt from None
        raise
    if fetched is None:  # the suite exists but has no amd64 main index
        return finish(SuiteIndex(mirror, suite, False, now()), "no amd64 index")
    text, sha = fetched
    note = "refetched (cache was corrupt)" if corrupt is not None else "downloaded"
    return finish(SuiteIndex(mirror, suite, False, now(), reduce_packages(text), sha), note)


class PoolCache:
    """Remembered HEAD answers for pool files, so warm catalogue loads stay offline.

    Answers older than ``max_age`` are asked again.  Thread-safe, because the
    catalogue checks many pool paths concurrently.
    """

    def __init__(self, path: Path | None, max_age: float = FRESH_SECONDS) -> None:
        self.path = path
        self.max_age = max_age
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one writer at a time, newest snapshot last
        self._answers: dict[str, tuple[bool, float]] = {}
        self._dirty = False
        if path is not None and path.exists():
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
                if document.get("sha256") == _digest(document["answers"]):
                    self._answers = {
                        k: (bool(v[0]), float(v[1])) for k, v in document["answers"].items()
                    }
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                self._answers = {}  # a damaged answer cache is just re-asked

    def get(self, url: str, now: float, *, any_age: bool = False) -> bool | None:
        with self._lock:
            answer = self._answers.get(url)
        if answer is None or (not any_age and now - answer[1] >= self.max_age):
            return None
        return answer[0]

    def put(self, url: str, exists: bool, now: float) -> None:
        with self._lock:
            self._answers[url] = (exists, now)
            self._dirty = True

    def forget(self) -> None:
        with self._lock:
            self._answers.clear()
            self._dirty = True

    def save(self) -> None:
        if self.path is None:
            return
        with self._save_lock:
            with self._lock:
                if not self._dirty:
                    return
                answers = {k: [v[0], v[1]] for k, v in self._answers.items()}
                self._dirty = False
            document = {"sha256": _digest(answers), "answers": answers}
            _write_atomic(self.path, json.dumps(document, separators=(",", ":")).encode())


def pool_exists(
    mirror: str,
    path: str,
    *,
    transport: Transport | None = None,
    cache: PoolCache | None = None,
    now: Callable[[], float] = time.time,
) -> bool:
    """Whether ``mirror/path`` exists (HTTP HEAD), remembered in ``cache`` if given.

    Offline, an expired remembered answer is used rather than failing the run.
    """
    url = f"{mirror.rstrip('/')}/{path.lstrip('/')}"
    if cache is not None:
        known = cache.get(url, now())
        if known is not None:
            return known
    try:
        exists = (transport if transport is not None else HttpTransport()).head(url)
    except ArchiveError:
        stale = cache.get(url, now(), any_age=True) if cache is not None else None
        if stale is None:
            raise
        return stale
    if cache is not None:
        cache.put(url, exists, now())
    return exists


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def download_deb(
    deb: DebFile,
    dest_dir: Path,
    *,
    transport: Transport | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Fetch ``deb`` into ``dest_dir``; reuse a verified copy.

    ``deb`` is a :class:`lab.catalogue.kernels.DebFile`.  The file is named by the
    pool basename (package_version_arch).  Debs derived from the pool carry no
    index hash; for them the hash taken at download time is kept in a ``.sha256``
    sidecar so later corruption of the cache is still caught.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / Path(deb.path).name
    sidecar = _sidecar(target)
    task = f"download {target.name}"
    expected: str | None = deb.sha256.lower() if deb.sha256 else None
    if target.exists():
        want = expected
        if want is None and sidecar.exists():
            want = sidecar.read_text(encoding="ascii").strip()
        if want is not None and sha256_file(target) == want:
            if progress is not None:
                progress(ProgressEvent(task, 1, 1, "cached"))
            return target
        target.unlink()  # corrupt or unverifiable: fetch again

    net = transport if transport is not None else HttpTransport()
    url = f"{deb.mirror.rstrip('/')}/{deb.path}"
    opened = net.iter_content(url)
    if opened is None:
        raise ArchiveError(
            f"{url} is not on the mirror (404): the package was probably superseded; "
            "rerun with --refresh to update the kernel catalogue"
        )
    total, chunks = opened
    total = deb.size if deb.size is not None else total
    digest = hashlib.sha256()
    done = 0
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{target.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for block in chunks:
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(ProgressEvent(task, done, total))
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if expected is not None and got != expected:
            raise ArchiveError(
                f"{url} has sha256 {got} but the index says {expected}; the mirror is "
                "probably mid-sync: retry later or choose another mirror with --mirror URI"
            )
        if deb.size is not None and done != deb.size:
            raise ArchiveError(
                f"{url} is {done} bytes but the index says {deb.size}; retry later or "
                "choose another mirror with --mirror URI"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_atomic(sidecar, (got + "\n").encode("ascii"))
    return target
