"""Index download, verification and caching; .deb downloads (all against a fake mirror)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fixtures.fake_mirror import ARCHIVE, FIXTURES, FakeMirror, fixture_packages

from lab.catalogue.archive import (
    FRESH_SECONDS,
    PoolCache,
    download_deb,
    fetch_index,
    index_cache_path,
    load_index,
    pool_exists,
    reduce_packages,
    release_hashes,
)
from lab.catalogue.kernels import DebFile
from lab.errors import ArchiveError, CacheCorruptError

SUITE = "trixie"
PACKAGES_XZ = f"{ARCHIVE}/dists/{SUITE}/main/binary-amd64/Packages.xz"


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeMirror:
    mirror = FakeMirror()
    mirror.add_fixture_suites([SUITE])
    return mirror


def test_inrelease_sha256_list_is_read_through_the_signature() -> None:
    hashes = release_hashes((FIXTURES / "InRelease").read_bytes())
    assert hashes["main/binary-amd64/Packages.xz"] == (
        "76b4be28e3ff8280841fc840f8031e61150f757cd7b264b9e4c1c1b1908b7c6b",
        311828,
    )


def test_reduction_keeps_only_kernel_paragraphs_and_needed_fields() -> None:
    kept = reduce_packages(fixture_packages(SUITE))
    names = {p["Package"] for p in kept}
    assert "bash" not in names and "linux-doc-6.12" not in names
    assert not any(name.endswith("-dbg") for name in names)
    assert {"linux-image-6.12.57+deb13-amd64", "linux-kbuild-6.12.57+deb13"} <= names
    assert all("Maintainer" not in p and "Description" not in p for p in kept)


def test_first_fetch_verifies_and_caches_then_serves_offline(
    fake: FakeMirror, tmp_path: Path
) -> None:
    clock = Clock()
    index = fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake, now=clock)
    assert not index.absent and index.note == "downloaded"
    assert index.find("linux-image-6.12.57+deb13-amd64", "6.12.57-1")
    assert fake.urls() == [f"{ARCHIVE}/dists/{SUITE}/InRelease", PACKAGES_XZ]

    fake.calls.clear()
    fake.offline = True
    clock.now += FRESH_SECONDS - 1
    again = fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake, now=clock)
    assert again.packages == index.packages
    assert fake.calls == []


def test_stale_cache_rechecks_inrelease_but_skips_an_unchanged_packages(
    fake: FakeMirror, tmp_path: Path
) -> None:
    clock = Clock()
    fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake, now=clock)
    fake.calls.clear()
    clock.now += FRESH_SECONDS + 1
    index = fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake, now=clock)
    assert index.note == "unchanged"
    assert fake.urls() == [f"{ARCHIVE}/dists/{SUITE}/InRelease"]
    # ... and the re-stamped cache is fresh again.
    fake.calls.clear()
    fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake, now=clock)
    assert fake.calls == []


def test_refresh_forces_a_download(fake: FakeMirror, tmp_path: Path) -> None:
    fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake)
    fake.add_suite(ARCHIVE, SUITE, fixture_packages("trixie-security"))  # the index changed
    fake.calls.clear()
    index = fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake, refresh=True)
    assert PACKAGES_XZ in fake.urls()
    assert index.find("linux-image-6.12.58+deb13-amd64")


def test_offline_with_a_stale_cache_uses_it(fake: FakeMirror, tmp_path: Path) -> None:
    clock = Clock()
    fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake, now=clock)
    clock.now += 10 * FRESH_SECONDS
    fake.offline = True
    index = fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake, now=clock)
    assert index.note == "stale" and index.packages


def test_missing_suite_is_cached_as_absent(tmp_path: Path) -> None:
    fake = FakeMirror()
    index = fetch_index(ARCHIVE, "bullseye-updates", cache_dir=tmp_path, transport=fake)
    assert index.absent and index.packages == ()
    fake.calls.clear()
    assert fetch_index(ARCHIVE, "bullseye-updates", cache_dir=tmp_path, transport=fake).absent
    assert fake.calls == []


def test_gz_is_used_when_xz_is_not_listed(tmp_path: Path) -> None:
    fake = FakeMirror()
    fake.add_suite(ARCHIVE, SUITE, fixture_packages(SUITE), compressions=("gz",))
    index = fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake)
    assert index.find("linux-headers-6.12.57+deb13-common")
    assert fake.urls()[-1].endswith("Packages.gz")


def test_packages_not_matching_inrelease_is_an_archive_error(
    fake: FakeMirror, tmp_path: Path
) -> None:
    fake.files[PACKAGES_XZ] += b"tampered"
    with pytest.raises(ArchiveError, match="does not match its InRelease") as caught:
        fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake)
    assert "--mirror" in str(caught.value)
    assert not index_cache_path(tmp_path, ARCHIVE, SUITE).exists()


def _corrupt(path: Path) -> None:
    document = json.loads(path.read_text())
    document["payload"]["packages"][0]["Version"] = "9.9.9-1"  # a silent edit
    path.write_text(json.dumps(document))


def test_corrupted_cache_is_detected_and_refetched(fake: FakeMirror, tmp_path: Path) -> None:
    fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake)
    path = index_cache_path(tmp_path, ARCHIVE, SUITE)
    _corrupt(path)
    with pytest.raises(CacheCorruptError, match="--refresh"):
        load_index(path)
    fake.calls.clear()
    index = fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake)
    assert index.note == "refetched (cache was corrupt)"
    assert PACKAGES_XZ in fake.urls()
    assert load_index(path).packages == index.packages


def test_corrupted_cache_while_offline_raises_cache_corrupt(
    fake: FakeMirror, tmp_path: Path
) -> None:
    fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake)
    path = index_cache_path(tmp_path, ARCHIVE, SUITE)
    path.write_text("{not json")
    fake.offline = True
    with pytest.raises(CacheCorruptError, match=str(path)):
        fetch_index(ARCHIVE, SUITE, cache_dir=tmp_path, transport=fake)


# -- pool HEAD checks ---------------------------------------------------------


def test_pool_exists_asks_once_and_remembers_across_instances(tmp_path: Path) -> None:
    fake = FakeMirror()
    fake.add_pool(ARCHIVE, "pool/main/l/linux/a.deb")
    cache = PoolCache(tmp_path / "heads.json")
    assert pool_exists(ARCHIVE, "pool/main/l/linux/a.deb", transport=fake, cache=cache)
    assert not pool_exists(ARCHIVE, "pool/main/l/linux/b.deb", transport=fake, cache=cache)
    cache.save()
    fake.calls.clear()
    reloaded = PoolCache(tmp_path / "heads.json")
    assert pool_exists(ARCHIVE, "pool/main/l/linux/a.deb", transport=fake, cache=reloaded)
    assert not pool_exists(ARCHIVE, "pool/main/l/linux/b.deb", transport=fake, cache=reloaded)
    assert fake.calls == []


# -- .deb downloads -------------------------------------------------------------

BODY = b"!<arch>\ndebian-binary   " + bytes(range(256)) * 40
PATH = "pool/main/l/linux/linux-kbuild-6.12.57+deb13_6.12.57-1_amd64.deb"


def _deb(sha256: str | None, size: int | None = len(BODY)) -> DebFile:
    return DebFile("linux-kbuild-6.12.57+deb13", "6.12.57-1", PATH, ARCHIVE, sha256, size)


@pytest.fixture
def served() -> FakeMirror:
    fake = FakeMirror()
    fake.files[f"{ARCHIVE}/{PATH}"] = BODY
    return fake


def test_download_is_verified_named_by_pool_basename_and_cached(
    served: FakeMirror, tmp_path: Path
) -> None:
    deb = _deb(hashlib.sha256(BODY).hexdigest())
    events = []
    path = download_deb(deb, tmp_path, transport=served, progress=events.append)
    assert path == tmp_path / "linux-kbuild-6.12.57+deb13_6.12.57-1_amd64.deb"
    assert path.read_bytes() == BODY
    assert events[-1].done == events[-1].total == len(BODY)
    served.calls.clear()
    assert download_deb(deb, tmp_path, transport=served) == path
    assert served.calls == []


def test_corrupt_cached_deb_is_downloaded_again(served: FakeMirror, tmp_path: Path) -> None:
    deb = _deb(hashlib.sha256(BODY).hexdigest())
    path = download_deb(deb, tmp_path, transport=served)
    path.write_bytes(BODY[:100])  # truncated by a crash or a full disk
    served.calls.clear()
    assert download_deb(deb, tmp_path, transport=served).read_bytes() == BODY
    assert served.urls() == [f"{ARCHIVE}/{PATH}"]


def test_hash_mismatch_leaves_neither_file_nor_partial(served: FakeMirror, tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="mid-sync"):
        download_deb(_deb("0" * 64), tmp_path, transport=served)
    assert list(tmp_path.iterdir()) == []


def test_pool_derived_deb_gets_a_sidecar_hash_that_guards_the_cache(
    served: FakeMirror, tmp_path: Path
) -> None:
    deb = _deb(None, None)
    path = download_deb(deb, tmp_path, transport=served)
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text().strip() == hashlib.sha256(BODY).hexdigest()
    path.write_bytes(b"garbage")
    served.calls.clear()
    assert download_deb(deb, tmp_path, transport=served).read_bytes() == BODY
    assert served.calls


def test_deb_gone_from_the_mirror_suggests_refresh(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="--refresh"):
        download_deb(_deb(None), tmp_path, transport=FakeMirror())


def test_offline_pool_check_falls_back_to_an_expired_answer(tmp_path: Path) -> None:
    fake = FakeMirror()
    fake.add_pool(ARCHIVE, "pool/main/l/linux/a.deb")
    clock = Clock()
    cache = PoolCache(tmp_path / "heads.json")
    assert pool_exists(ARCHIVE, "pool/main/l/linux/a.deb", transport=fake, cache=cache, now=clock)
    clock.now += 10 * FRESH_SECONDS
    fake.offline = True
    assert pool_exists(ARCHIVE, "pool/main/l/linux/a.deb", transport=fake, cache=cache, now=clock)
    with pytest.raises(ArchiveError, match="offline"):
        pool_exists(ARCHIVE, "pool/main/l/linux/b.deb", transport=fake, cache=cache, now=clock)
