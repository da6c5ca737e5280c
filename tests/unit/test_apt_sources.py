"""Reading the Debian mirror from apt's configuration (fixtures under fixtures/apt/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.catalogue.apt_sources import Mirror, find_mirror, parse_one_line, read_sources, suite_kind
from lab.config import Config
from lab.errors import MirrorConfigError

APT = Path(__file__).parent / "fixtures" / "apt"
NO_ENV: dict[str, str] = {}


def test_deb822_reads_archive_and_security_skipping_comments_disabled_and_vendors() -> None:
    mirror = find_mirror(root=APT / "deb822", environ=NO_ENV)
    assert mirror == Mirror("http://mirror.example/debian", "http://mirror.example/debian-security")
    assert all("debian.sources" in source for source in mirror.sources)


def test_deb822_entries_drop_enabled_no_and_deb_src_only_stanzas() -> None:
    uris = {entry.uri for entry in read_sources(APT / "deb822")}
    assert "http://disabled.example/debian" not in uris  # Enabled: no
    assert "http://source-only.example/debian" not in uris  # Types: deb-src only
    assert "http://farm-disabled.example/debian" not in uris  # *.disabled* file
    assert "https://vendor.example/node_20.x" in uris  # read, but not Debian


def test_one_line_with_options_comments_cdrom_and_third_party() -> None:
    mirror = find_mirror(root=APT / "oneline", environ=NO_ENV)
    # cloud-sdk-bookworm (vendor), deb-src, the commented line and cdrom: are skipped;
    # backports.list.disabled and notes.txt are not read at all.
    assert mirror.archive == "http://mirror.example/debian"
    assert mirror.security == "http://security.example/debian-security"


def test_one_line_parser_keeps_uri_and_suite_around_bracketed_options() -> None:
    text = "deb [ arch=amd64 signed-by=/k.gpg ] http://m.example/debian/ trixie main # note\n"
    (entry,) = parse_one_line(text, Path("x.list"))
    assert (entry.uri, entry.suites) == ("http://m.example/debian", ("trixie",))


def test_old_security_spelling_counts_as_security() -> None:
    text = "deb http://old.example/debian-security buster/updates main\n"
    (entry,) = parse_one_line(text, Path("x.list"))
    assert suite_kind(entry.suites[0]) == "security"


def test_missing_security_is_not_fatal_until_a_security_suite_is_asked_for() -> None:
    mirror = find_mirror(root=APT / "no-security", environ=NO_ENV)
    assert mirror.archive == "http://mirror.example/debian"
    assert mirror.security is None
    assert mirror.uri_for("buster-updates") == "http://mirror.example/debian"
    with pytest.raises(MirrorConfigError, match="VHBA_LAB_SECURITY_MIRROR"):
        mirror.uri_for("buster-security")


def test_no_debian_source_names_the_files_read_and_the_overrides() -> None:
    with pytest.raises(MirrorConfigError) as caught:
        find_mirror(root=APT / "third-party-only", environ=NO_ENV)
    message = str(caught.value)
    assert "vendor.list" in message
    assert "VHBA_LAB_MIRROR" in message and "--mirror" in message
    assert "\n" not in message


def test_empty_root_is_reported(tmp_path: Path) -> None:
    with pytest.raises(MirrorConfigError, match="no source files under"):
        find_mirror(root=tmp_path, environ=NO_ENV)


def test_precedence_arguments_then_environment_then_config_then_apt() -> None:
    root = APT / "deb822"
    config = Config(archive="http://config.example/debian", security="http://config.example/sec")
    env = {
        "VHBA_LAB_MIRROR": "http://env.example/debian/",
        "VHBA_LAB_SECURITY_MIRROR": "http://env.example/sec",
    }
    assert find_mirror(root=root, environ={}, config=config) == Mirror(
        "http://config.example/debian", "http://config.example/sec"
    )
    assert find_mirror(root=root, environ=env, config=config) == Mirror(
        "http://env.example/debian", "http://env.example/sec"
    )
    explicit = find_mirror("http://arg.example/debian", None, root=root, environ=env)
    assert explicit == Mirror("http://arg.example/debian", "http://env.example/sec")


def test_override_works_without_any_apt_configuration(tmp_path: Path) -> None:
    mirror = find_mirror(root=tmp_path, environ={"VHBA_LAB_MIRROR": "http://env.example/debian"})
    assert mirror == Mirror("http://env.example/debian", None)
