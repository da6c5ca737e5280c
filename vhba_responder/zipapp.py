"""Build a single-file ``vhba-responder.pyz`` to copy into a guest.

The archive holds only this package's sources and a ``__main__`` that exits
with the CLI's return code (stdlib ``zipapp``'s generated entry point would
drop it).  ``python3 vhba-responder.pyz serve ...`` then works on any
Python >= 3.9 with no installation.

Usage: ``python -m vhba_responder.zipapp OUT.pyz``
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import zipapp as _zipapp
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ENTRY = "import sys\nfrom vhba_responder.cli import main\nsys.exit(main())\n"


def build(out: Path) -> Path:
    """Write the archive to ``out`` and return its path."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="vhba-pyz-") as tmp:
        root = Path(tmp)
        dest = root / PACKAGE_DIR.name
        for src in sorted(PACKAGE_DIR.rglob("*")):
            rel = src.relative_to(PACKAGE_DIR)
            if "__pycache__" in rel.parts:
                continue
            if src.is_file() and src.suffix in (".py", ".md"):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        (root / "__main__.py").write_text(ENTRY, encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        _zipapp.create_archive(root, out, interpreter="/usr/bin/env python3", compressed=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m vhba_responder.zipapp OUT.pyz", file=sys.stderr)
        return 2
    print(build(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
