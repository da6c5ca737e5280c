"""The fake guest channel keeps the contract the real one keeps (tests/contract)."""

from __future__ import annotations

from pathlib import Path

from tests.contract.guest_channel import LocalChannel, check_channel


def test_the_local_channel_keeps_the_guest_contract(tmp_path: Path) -> None:
    alive = [True]
    oops: list[str] = []
    channel = LocalChannel(alive=lambda: alive[0], oopsed=lambda: oops[0] if oops else None)
    check_channel(
        channel,
        str(tmp_path),
        kill=lambda: alive.__setitem__(0, False),
        oops=lambda: oops.append("BUG: kernel NULL pointer dereference, address: 0000000000000010"),
    )
