"""``python -m vhba_responder``: same as the ``vhba-responder`` console script."""

from __future__ import annotations

import sys

from vhba_responder.cli import main

if __name__ == "__main__":
    sys.exit(main())
