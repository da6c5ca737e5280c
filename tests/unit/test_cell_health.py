"""The per-test kernel health check must actually flag a bad kernel log and new taint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from lab.cellenv import CellEnv, Health
from lab.cells import CellSpec
from lab.guest import CommandResult


@dataclass
class FakeGuest:
    dmesg: str
    taint: int
    ran: list[str] = field(default_factory=list)

    def run(self, cmd: str, timeout: float = 0, check: bool = False) -> CommandResult:
        """Answers the two health commands: taint (+ marker), taint + dmesg from the marker."""
        self.ran.append(cmd)
        out = f"{self.taint}\n"
        if "dmesg" in cmd:
            lines = self.dmesg.splitlines(keepends=True)
            hit = [i for i, line in enumerate(lines) if MARK in line]
            out += "".join(lines[hit[0] :]) if hit else ""
        return CommandResult(cmd, 0, out, "")


def _cell(tmp_path: Path, guest: FakeGuest) -> CellEnv:
    env = CellEnv(SimpleNamespace(), CellSpec("6.12"), tmp_path, {})  # type: ignore[arg-type]
    env.booted = SimpleNamespace(guest=guest)  # type: ignore[assignment]
    return env


MARK = "vhba-lab: test start spc/test_x 1.0"


def test_clean_slice_passes_and_is_saved(tmp_path: Path) -> None:
    guest = FakeGuest(f"[1] old WARNING: before\n[2] {MARK}\n[3] sr 0:0:0:0: ok\n", 4096)
    problem = _cell(tmp_path, guest).health_end(Health(MARK, 0), tmp_path / "d.txt")
    assert problem is None, "the out-of-tree taint bit and lines before the marker are expected"
    assert "sr 0:0:0:0: ok" in (tmp_path / "d.txt").read_text()


def test_warning_after_the_marker_fails(tmp_path: Path) -> None:
    guest = FakeGuest(f"[2] {MARK}\n[3] WARNING: CPU: 0 PID: 1 at vhba.c:10\n", 0)
    problem = _cell(tmp_path, guest).health_end(Health(MARK, 0), tmp_path / "d.txt")
    assert problem is not None and "WARNING: CPU" in problem


def test_get_event_tur_disagreement_fails(tmp_path: Path) -> None:
    guest = FakeGuest(f"{MARK}\nsr0: GET_EVENT and TUR disagree continuously\n", 0)
    assert _cell(tmp_path, guest).health_end(Health(MARK, 0), tmp_path / "d.txt")


def test_new_taint_bit_fails(tmp_path: Path) -> None:
    guest = FakeGuest(f"{MARK}\n", 4096 | 512)  # 512 = TAINT_WARN
    problem = _cell(tmp_path, guest).health_end(Health(MARK, 4096), tmp_path / "d.txt")
    assert problem is not None and "0x200" in problem


def test_start_marks_the_log_and_reads_taint_in_one_round_trip(tmp_path: Path) -> None:
    guest = FakeGuest("", 4096)
    health = _cell(tmp_path, guest).health_start("spc/test_x")
    assert health.taint_before == 4096
    assert health.marker.startswith("vhba-lab: test start spc/test_x")
    assert len(guest.ran) == 1 and "/dev/kmsg" in guest.ran[0]


def test_lost_marker_fails(tmp_path: Path) -> None:
    """A log without the marker (ring buffer wrapped, guest rebooted) is not a clean slice."""
    guest = FakeGuest("[1] something else\n", 0)
    problem = _cell(tmp_path, guest).health_end(Health(MARK, 0), tmp_path / "d.txt")
    assert problem is not None and "marker is gone" in problem
