"""One exception type per failure kind.

Every error carries the fix in its message, because the CLI prints
``str(error)`` without a traceback and exits non-zero.  The hierarchy::

    LabError                      base; exit code 2 (infrastructure) unless noted
    ├── UsageError                bad input from the user; exit code 3
    │   └── UnknownKernelError    a kernel name that resolves to nothing
    ├── MirrorConfigError         no usable Debian mirror in the apt config
    ├── ArchiveError              a mirror download or index is unusable
    ├── CacheCorruptError         a cache entry failed verification
    ├── ImageBuildError           mmdebstrap or image assembly failed
    ├── MachineError              QEMU failed to start or misbehaved
    │   └── BootTimeoutError      the guest did not become reachable in time
    ├── GuestCommandError         a command in the guest failed or timed out
    │   └── GuestLostError        the guest stopped answering at all (ssh or QEMU gone)
    └── ModuleBuildError          the VHBA module did not compile
"""

from __future__ import annotations


class LabError(Exception):
    """Base of every error the lab raises on purpose."""

    exit_code = 2


class UsageError(LabError):
    exit_code = 3


class UnknownKernelError(UsageError):
    pass


class MirrorConfigError(LabError):
    pass


class ArchiveError(LabError):
    pass


class CacheCorruptError(LabError):
    pass


class ImageBuildError(LabError):
    pass


class MachineError(LabError):
    pass


class BootTimeoutError(MachineError):
    pass


class GuestCommandError(LabError):
    pass


class GuestLostError(GuestCommandError):
    """Not one command's failure: the channel into the guest is gone (see lab.cell.state)."""


class GuestWaitError(GuestCommandError):
    """A condition polled from the host (``Guest.wait_for``) never came true in time."""


class ModuleBuildError(LabError):
    pass
