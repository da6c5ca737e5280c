"""The fake guest channel keeps the contract the real one keeps (tests/contract)."""

from __future__ import annotations

from pathlib import Path

from tests.contract.guest_channel import LocalChannel, check_channel


def test_the_local_channel_keeps_the_guest_contract(tmp_path: Path) -> None:
    alive = [True]
    channel = LocalChannel(alive=lambda: alive[0])
    check_channel(channel, str(tmp_path), kill=lambda: alive.__setitem__(0, False))
