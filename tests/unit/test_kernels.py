"""The kernel catalogue over the fixture mirror (fixtures/archive/*.Packages)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.fake_mirror import ARCHIVE, SECURITY, FakeMirror
from rich.console import Console

from lab.catalogue.apt_sources import Mirror
from lab.catalogue.archive import ProgressEvent
from lab.catalogue.kernels import (
    SCAN_SUITES,
    Catalogue,
    KernelEntry,
    format_table,
    resolve_local,
    series_of,
    suite_release,
)
from lab.errors import UnknownKernelError, UsageError

SERVED = (
    "bullseye", "bookworm", "bookworm-security", "bookworm-backports", "trixie",
    "trixie-security", "trixie-backports", "forky", "sid", "experimental",
)  # fmt: skip
BPO_POOL = "pool/main/l/linux"
V16 = "6.16.12-1~bpo13+1"


@pytest.fixture
def fake() -> FakeMirror:
    mirror = FakeMirror()
    mirror.add_fixture_suites(SERVED)
    # trixie-backports lists 6.16 and 6.17 images without headers; only 6.16's
    # headers are in the pool.
    mirror.add_pool(
        ARCHIVE,
        f"{BPO_POOL}/linux-headers-6.16.12+deb13-amd64_{V16}_amd64.deb",
        f"{BPO_POOL}/linux-headers-6.16.12+deb13-common_{V16}_all.deb",
        f"{BPO_POOL}/linux-kbuild-6.16.12+deb13_{V16}_amd64.deb",
    )
    return mirror


@pytest.fixture
def catalogue(fake: FakeMirror, tmp_path: Path) -> Catalogue:
    return Catalogue.load(Mirror(ARCHIVE, SECURITY), cache_dir=tmp_path, transport=fake)


def by_series(catalogue: Catalogue) -> dict[str, KernelEntry]:
    return {entry.series: entry for entry in catalogue.entries()}


def test_series_and_release_helpers() -> None:
    assert series_of("7.3~rc7-1~exp1") == "7.3"
    assert series_of("5.10.218-1") == "5.10"
    assert suite_release("trixie-backports") == "trixie"
    assert suite_release("experimental") == "sid"
    assert suite_release("buster/updates") == "buster"


def test_every_series_once_sorted_numerically(catalogue: Catalogue) -> None:
    assert [e.series for e in catalogue.entries()] == [
        "5.10", "6.1", "6.12", "6.16", "6.17", "7.2", "7.3",
    ]  # fmt: skip
    assert set(catalogue.absent_suites) == set(SCAN_SUITES) - set(SERVED)


def test_newest_build_of_a_series_wins_across_suites(catalogue: Catalogue) -> None:
    entries = by_series(catalogue)
    # 6.12.58-1 (trixie-security) beats 6.12.57-1, 6.12.48-1~bpo12+1, 6.12.38-1~deb12u1
    assert (entries["6.12"].version, entries["6.12"].suite) == ("6.12.58-1", "trixie-security")
    assert entries["6.12"].image.mirror == SECURITY
    assert entries["6.16"].version == V16  # not 6.16.3
    assert entries["7.3"].version == "7.3~rc7-1~exp1"


def test_release_is_the_userspace_of_the_suite(catalogue: Catalogue) -> None:
    entries = by_series(catalogue)
    assert entries["6.16"].release == "trixie"  # backports install into trixie
    assert entries["7.3"].release == "sid"  # experimental runs on sid
    assert entries["5.10"].release == "bullseye"


def test_same_build_in_forky_and_sid_belongs_to_forky(catalogue: Catalogue) -> None:
    entry = by_series(catalogue)["7.2"]
    assert (entry.version, entry.suite, entry.release) == ("7.2.13-1", "forky", "forky")


def test_signed_image_preferred_and_flavours_skipped(catalogue: Catalogue) -> None:
    entry = catalogue.resolve("6.12.57-1")
    assert entry.image.package == "linux-image-6.12.57+deb13-amd64"
    assert "/linux-signed-amd64/" in entry.image.path
    assert entry.image.sha256 and entry.image.size
    abis = {build.abi for build in catalogue.builds}
    assert not any("cloud" in abi or "rt-" in abi or abi == "amd64" for abi in abis)


def test_unsigned_image_used_when_no_signed_one_exists(catalogue: Catalogue) -> None:
    entry = by_series(catalogue)["6.1"]
    assert (entry.version, entry.abi) == ("6.1.147-1", "6.1.0-38-amd64")
    assert entry.image.package == "linux-image-6.1.0-38-amd64-unsigned"


def test_headers_follow_the_depends_of_the_indexed_headers(catalogue: Catalogue) -> None:
    entry = by_series(catalogue)["6.1"]
    assert entry.headers_source == "indexed"
    assert [(d.package, d.version) for d in entry.headers] == [
        ("linux-headers-6.1.0-38-amd64", "6.1.147-1"),
        ("linux-headers-6.1.0-38-common", "6.1.147-1"),
        ("linux-kbuild-6.1", "6.1.147-1"),  # named "6.1", depended on with >=
    ]
    assert all(d.mirror == SECURITY and d.sha256 for d in entry.headers)


def test_headers_missing_from_the_index_are_found_in_the_pool(
    catalogue: Catalogue, fake: FakeMirror
) -> None:
    entry = by_series(catalogue)["6.16"]
    assert entry.headers_source == "pool"
    assert [d.path for d in entry.headers] == [
        f"{BPO_POOL}/linux-headers-6.16.12+deb13-amd64_{V16}_amd64.deb",
        f"{BPO_POOL}/linux-headers-6.16.12+deb13-common_{V16}_all.deb",
        f"{BPO_POOL}/linux-kbuild-6.16.12+deb13_{V16}_amd64.deb",
    ]
    assert all(d.sha256 is None and d.version == V16 for d in entry.headers)


def test_series_without_headers_is_listed_and_marked(catalogue: Catalogue) -> None:
    entry = by_series(catalogue)["6.17"]
    assert entry.headers_missing and entry.headers == ()
    assert entry.image.package == "linux-image-6.17.8+deb13-amd64"


def test_pool_directory_comes_from_the_signed_source_when_built_using_is_absent(
    catalogue: Catalogue, fake: FakeMirror
) -> None:
    heads = fake.urls("HEAD")
    assert (
        f"{ARCHIVE}/{BPO_POOL}/linux-headers-6.17.8+deb13-amd64_6.17.8-1~bpo13+1_amd64.deb" in heads
    )


def test_split_images_carry_their_parts(catalogue: Catalogue) -> None:
    entry = by_series(catalogue)["7.2"]
    assert sorted(d.package for d in entry.image_parts) == [
        "linux-base-7.2.13+deb14-amd64",
        "linux-binary-7.2.13+deb14-amd64",
        "linux-modules-7.2.13+deb14-amd64",
    ]
    assert entry.headers_source == "indexed"


def test_security_suites_are_skipped_without_a_security_mirror(
    fake: FakeMirror, tmp_path: Path
) -> None:
    catalogue = Catalogue.load(Mirror(ARCHIVE, None), cache_dir=tmp_path, transport=fake)
    assert "bookworm-security (no security mirror configured)" in catalogue.skipped
    assert not any(SECURITY in url for url in fake.urls())
    assert by_series(catalogue)["6.1"].version == "6.1.140-1"


def test_warm_load_needs_no_network(fake: FakeMirror, tmp_path: Path) -> None:
    mirror = Mirror(ARCHIVE, SECURITY)
    events: list[ProgressEvent] = []
    cold = Catalogue.load(mirror, cache_dir=tmp_path, transport=fake, progress=events.append)
    assert events[-1].done == events[-1].total == len(SCAN_SUITES)
    fake.calls.clear()
    fake.offline = True
    warm = Catalogue.load(mirror, cache_dir=tmp_path, transport=fake)
    assert warm.entries() == cold.entries()
    assert fake.calls == []


# -- name resolution -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version", "suite"),
    [
        ("6.12", "6.12.58-1", "trixie-security"),  # series
        ("5.10", "5.10.218-1", "bullseye"),
        # releases: what the release's linux-image-amd64 points to, never backports
        ("bullseye", "5.10.218-1", "bullseye"),
        ("bookworm", "6.1.140-1", "bookworm"),
        ("trixie", "6.12.58-1", "trixie-security"),
        ("forky", "7.2.13-1", "forky"),
        ("sid", "7.2.13-1", "sid"),
        # suite names
        ("trixie-backports", "7.2.12-1~bpo13+1", "trixie-backports"),
        ("experimental", "7.3~rc7-1~exp1", "experimental"),
        # exact versions and ABIs, also of builds that are not the newest
        ("6.12.57-1", "6.12.57-1", "trixie"),
        ("6.12.38-1~deb12u1", "6.12.38-1~deb12u1", "bookworm-security"),
        ("6.12.57+deb13-amd64", "6.12.57-1", "trixie"),
        ("6.16.3+deb13-amd64", "6.16.3-1~bpo13+1", "trixie-backports"),
    ],
)
def test_resolve(catalogue: Catalogue, name: str, version: str, suite: str) -> None:
    entry = catalogue.resolve(name)
    assert (entry.version, entry.suite) == (version, suite)


def test_resolved_old_build_gets_its_own_headers(catalogue: Catalogue) -> None:
    entry = catalogue.resolve("6.12.38-1~deb12u1")
    assert entry.release == "bookworm"
    assert [d.path.split("/")[-2] for d in entry.headers] == ["linux-6.12"] * 3


def test_unknown_name_lists_the_choices_on_one_line(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownKernelError) as caught:
        catalogue.resolve("nonsense")
    message = str(caught.value)
    assert message.startswith(
        "unknown kernel 'nonsense': choose one of 5.10, 6.1, 6.12, 6.16, 6.17, 7.2, 7.3, "
        "bullseye, bookworm, trixie, forky, sid, an exact version"
    )
    assert "kernel build dir" in message and "\n" not in message


def test_resolve_many_expands_all_and_drops_duplicates(catalogue: Catalogue) -> None:
    entries = catalogue.resolve_many(["6.12", "all", "trixie", "6.12.57-1"])
    assert [e.series for e in entries] == [
        "6.12", "5.10", "6.1", "6.16", "6.17", "7.2", "7.3", "6.12",
    ]  # fmt: skip
    assert entries[-1].version == "6.12.57-1"
    with pytest.raises(UnknownKernelError):
        catalogue.resolve_many(["6.12", "9.9"])


def test_table_has_one_row_per_entry(catalogue: Catalogue) -> None:
    table = format_table(catalogue.entries())
    assert [c.header for c in table.columns] == [
        "series", "version", "abi", "suite", "release", "headers",
    ]  # fmt: skip
    assert table.row_count == 7
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "missing" in text and "pool" in text and "indexed" in text


# -- local kernel trees -----------------------------------------------------------


def _tree(root: Path, release: str = "6.18.0-rc3+") -> Path:
    (root / "arch/x86/boot").mkdir(parents=True)
    (root / "arch/x86/boot/bzImage").write_bytes(b"MZ")
    (root / "include/config").mkdir(parents=True)
    (root / "include/config/kernel.release").write_text(release + "\n")
    (root / "Module.symvers").write_text("")
    return root


def test_local_kernel_tree(tmp_path: Path) -> None:
    local = resolve_local(_tree(tmp_path / "linux"))
    assert (local.kernel_release, local.series, local.release) == ("6.18.0-rc3+", "6.18", "trixie")
    assert local.bzimage.name == "bzImage"


def test_unbuilt_tree_says_what_is_missing_and_how_to_build(tmp_path: Path) -> None:
    root = _tree(tmp_path / "linux")
    (root / "Module.symvers").unlink()
    with pytest.raises(UsageError, match=r"missing Module\.symvers.*make -j"):
        resolve_local(root)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        resolve_local(tmp_path / "nope")


def test_split_image_without_its_parts_is_flagged(tmp_path: Path) -> None:
    fake = FakeMirror()
    ver = "7.1.3-1~bpo13+1"
    fake.add_suite(
        ARCHIVE,
        "trixie-backports",
        (
            "Package: linux-image-7.1.3+deb13-amd64\n"
            f"Source: linux-signed-amd64 (7.1.3+1~bpo13+1)\nVersion: {ver}\n"
            "Architecture: amd64\n"
            f"Depends: linux-base-7.1.3+deb13-amd64 (= {ver}), "
            f"linux-binary-7.1.3+deb13-amd64 (= {ver}), linux-modules-7.1.3+deb13-amd64 (= {ver})\n"
            "Filename: pool/main/l/linux-signed-amd64/"
            f"linux-image-7.1.3+deb13-amd64_{ver}_amd64.deb\n"
            "Size: 1896\n"
        ),
    )
    fake.add_pool(
        ARCHIVE, f"pool/main/l/linux-signed-amd64/linux-binary-7.1.3+deb13-amd64_{ver}_amd64.deb"
    )
    catalogue = Catalogue.load(
        Mirror(ARCHIVE, None), cache_dir=tmp_path, transport=fake, suites=("trixie-backports",)
    )
    (entry,) = catalogue.entries()
    assert [d.package for d in entry.image_parts] == ["linux-binary-7.1.3+deb13-amd64"]
    assert entry.parts_missing == (
        "linux-base-7.1.3+deb13-amd64",
        "linux-modules-7.1.3+deb13-amd64",
    )
    assert entry.headers_missing
    console = Console(width=200, record=True)
    console.print(format_table([entry]))
    assert "image incomplete" in console.export_text()
