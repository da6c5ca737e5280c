"""Experiment shim (bench only): our responder with every command run in its reader thread.

Same code as the shipped responder, but ``Server``'s worker pool is replaced
by a direct call, so a command costs no thread handoff (and a drive serves one
command at a time).  Used by the ``ours-ours-inline`` stack to measure what
the reader -> pool handoff costs per command.  Run next to the zipapp:

    python3 responder_inline.py /root/vhba-responder.pyz serve ...
"""

from __future__ import annotations

import sys

sys.path.insert(0, sys.argv.pop(1))

from vhba_responder import server


class _Inline:
    def submit(self, fn, *args):  # type: ignore[no-untyped-def]
        fn(*args)

    def shutdown(self, wait: bool = True) -> None:
        pass


_orig_init = server.Server.__init__


def _init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    _orig_init(self, *args, **kwargs)
    self._pool.shutdown()
    self._pool = _Inline()


server.Server.__init__ = _init  # type: ignore[method-assign]

from vhba_responder.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
