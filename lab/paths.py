"""Where the lab keeps its cache, following the XDG base-directory convention."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The lab's cache directory: ``$VHBA_LAB_CACHE`` or ``$XDG_CACHE_HOME/vhba-lab``.

    CI points this at a persistent directory so guest images survive between runs.
    """
    override = os.environ.get("VHBA_LAB_CACHE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "vhba-lab"


def repo_root() -> Path:
    """The checkout this package runs from (module/, conformance/ live there)."""
    return Path(__file__).resolve().parent.parent
