"""A drive held open while its SCSI device goes, and the kernel bug in its last close.

Any user who may open /dev/srN can hold it while the drive is unplugged; with
vhba, a seat user's responder unplugs its drive whenever it likes.  Since
Linux 5.18 (sr's ``free_disk``) that last close frees the SCSI device before
the disk, and the disk's release then runs the cdrom layer's MRW exit hook,
which sends one more command through the freed device: a use-after-free in
``sr_packet`` (docs/kernel-bugs.md).  The hook is registered for every drive
that answers MODE SENSE page 2A on kernels without
``cdrom_probe_write_features`` (6.16), and only for drives that claim MRW
writing on kernels with it (6.1.192, 6.12.118).  From 6.17 on the MRW exit
runs at the last close instead, while sr still holds the device: out of
reach for every drive.

Provoking that on purpose reads, and may write, freed memory: on a kernel
without KASAN nothing would tell, and what the reuse breaks (seen: a general
protection fault in udev-worker on 6.16) would be blamed on later tests.  So
the lifecycle test (the module's part: the device goes, the close returns)
runs only where the kernel bug is out of reach for its drive, and the
attacker's MRW drive, whose job is to show the bug, runs where it is out of
reach or visible (KASAN); each is skipped elsewhere with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.vm.guest import command_text

if TYPE_CHECKING:
    from lab.vm.guest import Guest

KASAN = "kasan_report"
SR_FREES_DISK_LAST = "sr_free_disk"  # sr's free_disk: the device can go before the disk
MRW_PROBE = "cdrom_probe_write_features"  # the MRW hook only for drives that claim MRW writing
# unregister_cdrom() calls the hook through a pointer, so a kernel that does has
# the function as a symbol; one that calls it from cdrom_release() (6.17 on)
# inlines it there and has none.
MRW_EXIT_HOOK = "cdrom_mrw_exit"


def kernel_symbols(guest: Guest, *names: str) -> set[str]:
    """Which of ``names`` the running kernel or a loaded module defines (/proc/kallsyms).

    grep's exit status 1 is "none of them"; anything worse (kallsyms
    unreadable) is an error, not an empty answer: the callers decide from it
    whether provoking a kernel bug is safe, so they must not guess.
    """
    patterns = [arg for name in names for arg in ("-e", name)]
    res = guest.run(["grep", "-o", "-w", *patterns, "/proc/kallsyms"], check=False)
    if res.rc > 1:
        raise AssertionError(f"cannot read /proc/kallsyms (grep rc {res.rc}): {res.stderr}")
    return set(res.stdout.split()) & set(names)


def kasan(guest: Guest) -> bool:
    """Whether the running kernel has KASAN: a use-after-free it reaches is reported."""
    return KASAN in kernel_symbols(guest, KASAN)


def sr_uaf_reachable(guest: Guest, claims_mrw: bool) -> bool:
    """Whether the last close of an unplugged drive runs into sr's use-after-free here.

    ``claims_mrw``: the drive announces MRW writing (GET CONFIGURATION feature
    0x28), as a hostile responder can; every other MMC drive only reaches the
    hook on kernels without ``cdrom_probe_write_features``.
    """
    have = kernel_symbols(guest, SR_FREES_DISK_LAST, MRW_PROBE, MRW_EXIT_HOOK)
    hooked = MRW_EXIT_HOOK in have and (claims_mrw or MRW_PROBE not in have)
    return SR_FREES_DISK_LAST in have and hooked


#: Why a held-open drive may not lose its device where the kernel bug is reachable.
UNSAFE = ("on this kernel the last close of an unplugged drive runs into sr's "
          "use-after-free (docs/kernel-bugs.md)")  # fmt: skip


class HeldOpen:
    """A background shell in the guest that holds a node open (fd 3) until :meth:`close`.

    It stands for any opener the drive's owner does not control: udev's
    probes, a file manager, another user.  Use as a context manager; leaving
    the block closes it if the test has not.
    """

    def __init__(self, guest: Guest, node: str, user: str = "root", flags: str = "/tmp/held"):
        self.guest, self.node, self.user, self.flags = guest, node, user, flags

    def __enter__(self) -> HeldOpen:
        flags = self.flags
        script = (f'exec 3<"$1"; echo open >{flags}.open; '
                  f"while [ ! -e {flags}.close ]; do sleep 0.2; done; "
                  f"exec 3<&-; echo closed >{flags}.closed")  # fmt: skip
        argv = ["sh", "-c", script, "sh", self.node]
        if self.user != "root":
            argv = ["runuser", "-u", self.user, "--", *argv]
        self.guest.run(["sh", "-c", f"rm -f {flags}.*"])
        self.guest.sh(f"nohup {command_text(argv)} >/dev/null 2>&1 &")
        self.guest.wait_for(["test", "-s", f"{flags}.open"], timeout=30)
        return self

    def close(self) -> None:
        """Close the node and wait until the close has returned."""
        self.guest.run(["touch", f"{self.flags}.close"])
        self.guest.wait_for(["test", "-s", f"{self.flags}.closed"], timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.guest.run(["touch", f"{self.flags}.close"], check=False)
