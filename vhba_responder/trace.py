"""CDB trace: one JSON object per command, one line each (JSON Lines).

The lab diffs these traces across kernels to see exactly what each kernel
sends, so the record is small, flat and stable::

    {"t": 1732550000.123, "dev": 0, "op": "READ(10)", "cdb": "28000000001000000100",
     "len": 2048, "status": 0, "sense": null, "bytes": 2048, "us": 85}

``len`` is the kernel's transfer length, ``bytes`` the payload written back
(data-in, or sense on CHECK CONDITION), ``us`` the time to execute and answer.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO

from vhba_responder.device import Response

TRACE_KEYS = ("t", "dev", "op", "cdb", "len", "status", "sense", "bytes", "us")


def trace_record(
    t: float, dev: int, cdb: bytes, data_len: int, response: Response, duration_s: float
) -> dict[str, object]:
    return {
        "t": round(t, 6),
        "dev": dev,
        "op": response.name,
        "cdb": cdb.hex(),
        "len": data_len,
        "status": response.status,
        "sense": response.sense_text,
        "bytes": len(response.payload),
        "us": int(duration_s * 1_000_000),
    }


class TraceWriter:
    """Appends records to a file; safe to call from many worker threads."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._fh: IO[str] | None = (
            open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115
        )

    @property
    def enabled(self) -> bool:
        """False when tracing is off, so callers can skip building records."""
        return self._fh is not None

    def write(self, record: dict[str, object]) -> None:
        if self._fh is None:
            return
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
