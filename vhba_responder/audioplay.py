"""The drive's audio player: PLAY AUDIO's position, advancing in real time, and its status.

A CD-ROM drive plays CD-DA to its analogue output by itself; the host only
starts, pauses, resumes and stops it, and asks READ SUB-CHANNEL where the
head is.  Nothing is played here: the position advances at the disc's own
rate (75 sectors a second) from the moment PLAY AUDIO returned, until the
end of the range, when the status becomes "completed".  MMC's audio status
codes report a completion (or an error) once; after that there is "no
current audio status".  The clock is given, so tests need not wait.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable

SECTORS_PER_SECOND = 75


class AudioStatus(enum.IntEnum):
    """READ SUB-CHANNEL's audio status byte."""

    PLAYING = 0x11
    PAUSED = 0x12
    COMPLETED = 0x13
    ERROR = 0x14
    NONE = 0x15


class NotPlaying(Exception):
    """PAUSE/RESUME with no play operation to act on: COMMAND SEQUENCE ERROR."""


@dataclass
class AudioPlayer:
    """Where play is and what it is doing.  Held under the device lock."""

    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    status: AudioStatus = AudioStatus.NONE
    end: int = 0  # first LBA not played
    _origin: int = 0  # LBA at which play (re)started, at clock value _began
    _began: float = 0.0
    _position: int = 0  # where the head is when not playing

    def play(self, start: int, end: int) -> None:
        """Play from ``start`` up to (not including) ``end``."""
        self._origin, self.end, self._began = start, end, self.clock()
        self._position = start
        self.status = AudioStatus.PLAYING

    def position(self) -> int:
        """The LBA under the head now (the last one played, once play completed)."""
        if self.status is AudioStatus.PLAYING:
            at = self._origin + int((self.clock() - self._began) * SECTORS_PER_SECOND)
            if at >= self.end:
                self._position = max(self.end - 1, self._origin)
                self.status = AudioStatus.COMPLETED
                return self._position
            return at
        return self._position

    def pause(self) -> None:
        if self.status not in (AudioStatus.PLAYING, AudioStatus.PAUSED):
            raise NotPlaying
        self._position = self.position()
        if self.status is AudioStatus.PLAYING:
            self.status = AudioStatus.PAUSED

    def resume(self) -> None:
        if self.status not in (AudioStatus.PLAYING, AudioStatus.PAUSED):
            raise NotPlaying
        if self.status is AudioStatus.PAUSED:
            self.play(self._position, self.end)

    def stop(self) -> None:
        """STOP PLAY/SCAN, an eject or a new disc: the head stays where it was."""
        self._position = self.position()
        self.status = AudioStatus.NONE

    def report(self) -> tuple[AudioStatus, int]:
        """(status, position) for READ SUB-CHANNEL; a completion is reported once."""
        position = self.position()
        status = self.status
        if status in (AudioStatus.COMPLETED, AudioStatus.ERROR):
            self.status = AudioStatus.NONE
        return status, position
