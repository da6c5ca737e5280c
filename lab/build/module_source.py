"""A module under test from anywhere: a Kbuild tree or a release tarball (``--module PATH``).

Besides our own module (``ours``) and Debian's vhba-dkms (``upstream``) the
lab tests any tree that builds a vhba.ko exposing ``/dev/vhba_ctl``, e.g. a
contributor's upstream vhba-module checkout.  It becomes a module kind of its
own in cell ids and reports, named from its directory (``--module-name``
overrides), and its provenance is recorded with the results: the path, for
a git tree ``git describe`` and the commit, for a tarball its sha256, and
the sha256 of every vhba.ko built from it.

Such a module is treated like upstream's: built without ``-Werror`` and with
no fault injection, and the suite parts that need our extensions (direct
reads, our ioctls) skip with a reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from lab.catalogue.digest import sha256_file
from lab.cell.spec import MODULES
from lab.errors import UsageError
from lab.paths import cache_root

_TARBALL = re.compile(r"\.(tar|tar\.gz|tgz|tar\.xz|txz|tar\.bz2|tar\.zst)$")
_NAME = re.compile(r"^[a-z][a-z0-9]{0,23}$")


@dataclass(frozen=True)
class ModuleSource:
    name: str  # the module part of cell ids, e.g. "vhbamodule" in 6.12-vhbamodule-ours
    path: Path  # the Kbuild tree (the unpacked tree for a tarball)
    given: str  # what the user passed
    # A module whose known failures (conformance/known-failures.toml) this tree shares,
    # e.g. "upstream" for a vhba-module checkout (--module-known-as); None: only its own.
    known_as: str | None = None

    def provenance(self) -> dict[str, str]:
        """Where the module came from, for results.json (strings only)."""
        info = {"name": self.name, "given": self.given, "path": str(self.path)}
        if self.known_as:
            info["known_as"] = self.known_as
        given = Path(self.given).expanduser()
        if given.is_file():
            info["tarball_sha256"] = sha256_file(given)
        git = ["git", "-C", str(self.path)]
        commit = _output([*git, "rev-parse", "HEAD"])
        if commit:
            info["git_commit"] = commit
            info["git_describe"] = _output([*git, "describe", "--always", "--dirty", "--tags"])
        return info


def _output(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def default_name(path: Path) -> str:
    """A cell-id-safe name from a directory or tarball name: ``vhba-module-20260313.tar.xz``
    gives ``vhbamodule``: lower-case letters and digits, version numbers dropped."""
    stem = _TARBALL.sub("", path.name.lower())
    letters = re.sub(r"[^a-z0-9]", "", re.sub(r"[-_.]?\d[\d.]*$", "", stem))
    name = letters.lstrip("0123456789")[:24] or "module"
    return f"{name}tree" if name in MODULES else name


def _unpack(tarball: Path) -> Path:
    """The tree inside ``tarball``, unpacked once under the cache (keyed by its content)."""
    digest = sha256_file(tarball)
    dest = cache_root() / "module-sources" / digest[:16]
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="data")  # no links out, no devices
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UsageError(
                f"cannot unpack {tarball}: {exc}; pass a module tarball or tree"
            ) from exc
        tmp.rename(dest)
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def module_source(given: str, name: str | None = None, known_as: str | None = None) -> ModuleSource:
    """Check ``given`` (a Kbuild tree or tarball) and name it; a one-line error if unusable."""
    path = Path(given).expanduser()
    if not path.exists():
        raise UsageError(f"--module {given}: no such file or directory")
    if path.is_file():
        if not _TARBALL.search(path.name):
            raise UsageError(f"--module {given}: not a directory or a .tar(.gz|.xz|.bz2|.zst)")
        tree = _unpack(path)
    else:
        tree = path.resolve()
    if not any((tree / f).is_file() for f in ("Kbuild", "Makefile")):
        raise UsageError(
            f"--module {given}: {tree} has no Kbuild or Makefile; pass the directory that "
            "holds the module's Makefile (the one 'make -C KDIR M=DIR' builds)"
        )
    chosen = name or default_name(path)
    if not _NAME.match(chosen) or chosen in (*MODULES, "debug"):
        raise UsageError(
            f"bad module name {chosen!r}: use 1-24 lower-case letters and digits, starting "
            f"with a letter, other than {', '.join(MODULES)} and debug (--module-name NAME)"
        )
    if known_as is not None and known_as not in MODULES:
        raise UsageError(
            f"--module-known-as {known_as}: choose one of {', '.join(MODULES)} (the module "
            "whose known failures this tree shares)"
        )
    return ModuleSource(chosen, tree, given, known_as)
