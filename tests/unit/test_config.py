"""The optional user config: mirror overrides and extra suites."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.fake_mirror import ARCHIVE, FakeMirror

from lab.catalogue.apt_sources import Mirror
from lab.catalogue.kernels import Catalogue
from lab.config import Config, ExtraSuite, config_path, load_config
from lab.errors import UsageError

CONFIGS = Path(__file__).parent / "fixtures" / "config"


def test_location_follows_env_then_xdg(tmp_path: Path) -> None:
    assert config_path({"VHBA_LAB_CONFIG": "/x/c.toml"}) == Path("/x/c.toml")
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "vhba-lab/config.toml"


def test_absent_default_file_is_an_empty_config(tmp_path: Path) -> None:
    assert load_config(environ={"XDG_CONFIG_HOME": str(tmp_path)}) == Config()


def test_absent_file_named_by_env_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="VHBA_LAB_CONFIG"):
        load_config(environ={"VHBA_LAB_CONFIG": str(tmp_path / "nope.toml")})


def test_full_config_gives_mirror_and_extra_suites() -> None:
    config = load_config(environ={"VHBA_LAB_CONFIG": str(CONFIGS / "full.toml")})
    assert config.archive == "http://config.example/debian"  # trailing slash dropped
    assert config.security == "http://config.example/debian-security"
    assert config.extra_suites == (
        ExtraSuite("http://archive.example/debian", "buster", "buster"),
        # release defaults to the codename of the suite
        ExtraSuite("http://archive.example/debian-security", "buster/updates", "buster"),
    )


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("typo.toml", "unknown key(s) archiv"),
        ("broken.toml", "is not valid TOML"),
        ("extra-incomplete.toml", "needs both uri and suite"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(name: str, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_config(CONFIGS / name)
    assert fragment in str(caught.value)
    assert name in str(caught.value)


def test_extra_suite_joins_the_catalogue_with_its_release(tmp_path: Path) -> None:
    old = "http://archive.example/debian"
    fake = FakeMirror()
    # buster's 4.19 served from an archive-style mirror given in the config.
    fake.add_suite(
        old,
        "buster",
        (
            "Package: linux-image-4.19.0-27-amd64\n"
            "Source: linux-signed-amd64 (4.19.316+1)\n"
            "Version: 4.19.316-1\n"
            "Architecture: amd64\n"
            "Built-Using: linux (= 4.19.316-1)\n"
            "Filename: pool/main/l/linux-signed-amd64/"
            "linux-image-4.19.0-27-amd64_4.19.316-1_amd64.deb\n"
            "Size: 49000000\n"
        ),
    )
    fake.add_pool(
        old,
        "pool/main/l/linux/linux-headers-4.19.0-27-amd64_4.19.316-1_amd64.deb",
        "pool/main/l/linux/linux-headers-4.19.0-27-common_4.19.316-1_all.deb",
        "pool/main/l/linux/linux-kbuild-4.19_4.19.316-1_amd64.deb",
    )
    catalogue = Catalogue.load(
        Mirror(ARCHIVE, None),
        cache_dir=tmp_path,
        extra_suites=(ExtraSuite(old, "buster", "buster"),),
        transport=fake,
        suites=("bookworm",),  # absent on the fake mirror
    )
    (entry,) = catalogue.entries()
    assert (entry.series, entry.suite, entry.release) == ("4.19", "buster", "buster")
    assert entry.image.mirror == old
    assert entry.headers_source == "pool"
    assert catalogue.resolve("buster") == entry
    assert catalogue.absent_suites == ("bookworm",)
