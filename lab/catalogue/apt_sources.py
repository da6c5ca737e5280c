"""Which Debian mirror to use, read from the host's own apt configuration.

The lab never hard-codes a mirror: whatever the host already trusts for its
own packages (a local proxy, a corporate mirror, the CDN) is what the lab
downloads kernels from.  Both apt formats are read, under a root that tests
can point elsewhere:

* deb822 ``*.sources`` files (``Types``/``URIs``/``Suites``/``Enabled``),
* one-line ``sources.list`` and ``*.list`` files, with ``[opt=val ...]``
  options and ``#`` comments.

``deb-src`` entries, disabled entries, files whose name contains
``.disabled`` and entries whose suites are not Debian codenames (third-party
repositories such as ``cloud-sdk-bookworm`` or ``nodistro``) are ignored.

Two URIs come out, because Debian serves them from different trees:

* ``archive``: the URI serving plain release suites (``bookworm``,
  ``bookworm-updates``, ``trixie-backports``, ``sid`` ...);
* ``security``: the URI serving ``<codename>-security`` suites.

Precedence, highest first: explicit arguments (``--mirror``,
``--security-mirror``), the environment (``VHBA_LAB_MIRROR``,
``VHBA_LAB_SECURITY_MIRROR``), the ``[mirror]`` table of the user config
(:mod:`lab.config`), then apt.  A missing archive URI is an error
(:class:`~lab.errors.MirrorConfigError`): nothing can be listed without it.
A missing security URI is *not* an error: ``Mirror.security`` is ``None``
and the catalogue skips the ``*-security`` suites and says so, because the
lab is still useful without them and guessing a URI apt does not use would
silently test a different mirror than the host's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from debian import deb822

from lab.errors import MirrorConfigError

if TYPE_CHECKING:
    from lab.config import Config

DEFAULT_APT_ROOT = Path("/etc/apt")
ENV_ARCHIVE = "VHBA_LAB_MIRROR"
ENV_SECURITY = "VHBA_LAB_SECURITY_MIRROR"

# Debian codenames and their archive aliases.  Anything else (Ubuntu,
# vendor repositories) is not a Debian mirror for our purposes.
DEBIAN_CODENAMES = frozenset(
    {
        "hamm", "slink", "potato", "woody", "sarge", "etch", "lenny", "squeeze",
        "wheezy", "jessie", "stretch", "buster", "bullseye", "bookworm", "trixie",
        "forky", "duke", "sid", "experimental", "rc-buggy",
        "oldoldstable", "oldstable", "stable", "testing", "unstable",
    }
)  # fmt: skip
# Suffixes a Debian suite can carry after its codename.
_PLAIN_SUFFIXES = ("", "-updates", "-backports", "-backports-sloppy", "-proposed-updates")
_SECURITY_SUFFIXES = ("-security", "/updates")  # "/updates" is the pre-bullseye spelling
_SCHEMES = ("http://", "https://", "file:")


@dataclass(frozen=True)
class SourceEntry:
    """One ``deb`` line (or one URI of a deb822 stanza) that points at Debian."""

    uri: str
    suites: tuple[str, ...]
    origin: Path  # the file it came from, for error messages


@dataclass(frozen=True)
class Mirror:
    """The two Debian trees the catalogue downloads from.

    ``security`` is ``None`` when apt has no ``*-security`` source and no
    override was given; the catalogue then skips security suites.
    """

    archive: str
    security: str | None = None
    sources: tuple[str, ...] = field(default=(), compare=False)  # where each URI came from

    def uri_for(self, suite: str) -> str:
        """The base URI that serves ``suite``."""
        if is_security_suite(suite):
            if self.security is None:
                raise MirrorConfigError(
                    f"suite {suite!r} needs a Debian security mirror but none is configured: "
                    f"add a '<codename>-security' source to apt, set {ENV_SECURITY}, or pass "
                    "--security-mirror URI"
                )
            return self.security
        return self.archive


def is_security_suite(suite: str) -> bool:
    return suite.endswith(_SECURITY_SUFFIXES)


def suite_kind(suite: str) -> str | None:
    """``"plain"``, ``"security"`` or ``None`` when the suite is not Debian's."""
    for kind, suffixes in (("security", _SECURITY_SUFFIXES), ("plain", _PLAIN_SUFFIXES)):
        for suffix in suffixes:
            if suffix and not suite.endswith(suffix):
                continue
            base = suite[: len(suite) - len(suffix)] if suffix else suite
            if base in DEBIAN_CODENAMES:
                return kind
    return None


def _normalise(uri: str) -> str:
    return uri.rstrip("/")


def source_files(root: Path) -> list[Path]:
    """The files apt itself would read under ``root``, in apt's order."""
    files: list[Path] = []
    main = root / "sources.list"
    if main.is_file():
        files.append(main)
    parts = root / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if ".disabled" in path.name or not path.is_file():
                continue
            if path.suffix in (".list", ".sources"):
                files.append(path)
    return files


def parse_one_line(text: str, origin: Path) -> Iterator[SourceEntry]:
    """Entries of a one-line format file (``deb [opts] uri suite comp...``)."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        # Options may contain spaces inside the brackets: "[ arch=amd64 ]".
        line = re.sub(r"\[[^\]]*\]", " ", line, count=1)
        words = line.split()
        if len(words) < 3 or words[0] != "deb":
            continue  # deb-src, malformed lines
        uri, suite = words[1], words[2]
        yield SourceEntry(_normalise(uri), (suite,), origin)


def parse_deb822(text: str, origin: Path) -> Iterator[SourceEntry]:
    """Entries of a deb822 ``.sources`` file; one per URI of each enabled stanza."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for stanza in deb822.Deb822.iter_paragraphs(lines):
        if stanza.get("Enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        if "deb" not in stanza.get("Types", "").split():
            continue
        suites = tuple(stanza.get("Suites", "").split())
        for uri in stanza.get("URIs", "").split():
            yield SourceEntry(_normalise(uri), suites, origin)


def read_sources(root: Path = DEFAULT_APT_ROOT) -> list[SourceEntry]:
    """Every ``deb`` entry apt would use under ``root`` (Debian or not)."""
    entries: list[SourceEntry] = []
    for path in source_files(root):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # unreadable files are skipped like apt does for bad names
        parser = parse_deb822 if path.suffix == ".sources" else parse_one_line
        entries.extend(parser(text, path))
    return entries


def _first_uri(entries: Iterable[SourceEntry], kind: str) -> SourceEntry | None:
    for entry in entries:
        if not entry.uri.startswith(_SCHEMES):
            continue  # cdrom:, mirror+file: and the like are not fetchable by urllib
        if any(suite_kind(suite) == kind for suite in entry.suites):
            return entry
    return None


def find_mirror(
    archive: str | None = None,
    security: str | None = None,
    *,
    root: Path = DEFAULT_APT_ROOT,
    environ: Mapping[str, str] | None = None,
    config: Config | None = None,
) -> Mirror:
    """The mirror to use: arguments, then environment, then user config, then apt."""
    env = os.environ if environ is None else environ
    sources: list[str] = []

    def pick(explicit: str | None, env_name: str, configured: str | None, kind: str) -> str | None:
        label = "archive" if kind == "plain" else "security"
        if explicit:
            sources.append(f"{label}: command line")
            return _normalise(explicit)
        if env.get(env_name):
            sources.append(f"{label}: ${env_name}")
            return _normalise(env[env_name])
        if configured:
            sources.append(f"{label}: user config")
            return _normalise(configured)
        entry = _first_uri(apt_entries, kind)
        if entry is None:
            return None
        sources.append(f"{label}: {entry.origin}")
        return entry.uri

    apt_entries = read_sources(root)
    archive_uri = pick(archive, ENV_ARCHIVE, config.archive if config else None, "plain")
    security_uri = pick(security, ENV_SECURITY, config.security if config else None, "security")
    if archive_uri is None:
        read = ", ".join(str(p) for p in source_files(root)) or f"no source files under {root}"
        raise MirrorConfigError(
            f"no Debian archive mirror found in the apt configuration (read: {read}); "
            f'add a Debian source to apt, set {ENV_ARCHIVE}=URI, put archive = "URI" under '
            "[mirror] in the lab config, or pass --mirror URI"
        )
    return Mirror(archive_uri, security_uri, tuple(sources))
