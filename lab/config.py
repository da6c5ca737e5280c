"""The optional user configuration file.

Location: ``$VHBA_LAB_CONFIG`` if set, else
``$XDG_CONFIG_HOME/vhba-lab/config.toml`` (``~/.config/vhba-lab/config.toml``).
A missing file is the same as an empty one: the lab works out of the box from
the host's apt configuration.  Example::

    [mirror]
    archive = "http://mirror.example/debian"            # instead of apt's URI
    security = "http://mirror.example/debian-security"

    # Releases that have left the live mirror are kept on Debian's archive
    # mirror (archive.<debian domain>/debian and .../debian-security).  Adding
    # their suites here is how jessie 3.16, stretch 4.9 and buster 4.19 join the
    # catalogue; ``release`` is the userspace their images are built from.
    [[extra_suites]]
    uri = "http://archive.example/debian"
    suite = "buster"
    release = "buster"

    [[extra_suites]]
    uri = "http://archive.example/debian-security"
    suite = "buster/updates"
    release = "buster"

Unknown keys are rejected rather than ignored, so a typo cannot silently
drop a suite from the matrix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import UsageError

ENV_CONFIG = "VHBA_LAB_CONFIG"


@dataclass(frozen=True)
class ExtraSuite:
    """A suite outside the default scan list, fetched from its own URI."""

    uri: str
    suite: str
    release: str  # userspace release for images of kernels found here


@dataclass(frozen=True)
class Config:
    archive: str | None = None
    security: str | None = None
    extra_suites: tuple[ExtraSuite, ...] = ()
    path: Path | None = None  # the file it was read from, None when absent


def _toml_module() -> Any:
    """tomllib (3.11+) or its backport, imported only when a config file exists.

    Importing lazily keeps the rest of the lab usable on 3.9/3.10 without tomli.
    """
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ModuleNotFoundError:
        raise UsageError(
            "reading the lab config needs the 'tomli' package on Python < 3.11: pip install tomli"
        ) from None
    return tomli


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the config file is looked for (it need not exist)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    xdg = env.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "vhba-lab" / "config.toml"


def _fail(path: Path, what: str) -> UsageError:
    return UsageError(f"{path}: {what}; fix the file or point {ENV_CONFIG} at another one")


def _string(path: Path, table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"{where}.{key} must be a non-empty string, got {value!r}")
    return value.strip().rstrip("/")


def _check_keys(path: Path, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(
            path, f"unknown key(s) {', '.join(unknown)} in {where} (allowed: {sorted(allowed)})"
        )


def parse_config(data: Mapping[str, Any], path: Path) -> Config:
    """Validate an already-parsed TOML document."""
    _check_keys(path, data, {"mirror", "extra_suites"}, "the top level")
    mirror = data.get("mirror", {})
    if not isinstance(mirror, dict):
        raise _fail(path, "[mirror] must be a table")
    _check_keys(path, mirror, {"archive", "security"}, "[mirror]")
    suites_raw = data.get("extra_suites", [])
    if not isinstance(suites_raw, list):
        raise _fail(path, "extra_suites must be an array of tables ([[extra_suites]])")
    suites: list[ExtraSuite] = []
    for index, item in enumerate(suites_raw):
        where = f"extra_suites[{index}]"
        if not isinstance(item, dict):
            raise _fail(path, f"{where} must be a table")
        _check_keys(path, item, {"uri", "suite", "release"}, where)
        uri = _string(path, item, "uri", where)
        suite = _string(path, item, "suite", where)
        if uri is None or suite is None:
            raise _fail(path, f"{where} needs both uri and suite")
        # "buster-security" and "buster/updates" both belong to buster.
        release = _string(path, item, "release", where) or suite.split("/")[0].split("-")[0]
        suites.append(ExtraSuite(uri=uri, suite=suite, release=release))
    return Config(
        archive=_string(path, mirror, "archive", "[mirror]"),
        security=_string(path, mirror, "security", "[mirror]"),
        extra_suites=tuple(suites),
        path=path,
    )


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the user config; an absent file gives the empty default config."""
    env = os.environ if environ is None else environ
    target = path if path is not None else config_path(env)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        if path is not None or env.get(ENV_CONFIG):
            # A file the user named explicitly must exist.
            raise UsageError(
                f"config file {target} does not exist; create it or unset {ENV_CONFIG}"
            ) from None
        return Config()
    except OSError as error:
        raise _fail(target, f"cannot be read ({error.strerror})") from error
    tomllib = _toml_module()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise _fail(target, f"is not valid TOML ({error})") from error
    return parse_config(data, target)
