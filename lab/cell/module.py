"""Loading vhba into a booted guest, and asking whether it is in.

Part of bringing a cell up, and what the suite uses to reload the module
between tests: a vhba.ko built on the host (lab/build/module.py) is uploaded
and inserted here.  Kept apart from the build so that loading needs only the
guest channel, not the image and chroot machinery.
"""

from __future__ import annotations

from pathlib import Path

from lab.errors import GuestCommandError
from lab.vm.guest import Guest

GUEST_KO = "/root/vhba.ko"


def load_module(guest: Guest, ko: Path, params: str = "") -> None:
    """Put ``ko`` into the guest and insert it (see :func:`insert_module`)."""
    guest.upload(ko, GUEST_KO)
    insert_module(guest, params)


def insert_module(guest: Guest, params: str = "") -> None:
    """Insert the uploaded module and wait for /dev/vhba_ctl.

    The one way the lab and the suite (re)load vhba: a failure carries the
    module's last kernel messages.
    """
    # insmod does not resolve dependencies: load the SCSI stack sr/sg need first.
    guest.run(["modprobe", "-a", "scsi_mod", "sr_mod", "sg", "cdrom"], check=False)
    result = guest.run(["insmod", GUEST_KO, *params.split()], timeout=120, check=False)
    if result.rc == 0:
        guest.settle()  # udev creates /dev/vhba_ctl
        result = guest.run(["test", "-c", "/dev/vhba_ctl"], check=False)
    if result.rc != 0:
        dmesg = guest.sh("dmesg | tail -20", check=False).stdout
        raise GuestCommandError(
            f"loading vhba.ko failed (rc {result.rc}): {result.stderr.strip()}\n{dmesg}"
        )


def module_loaded(guest: Guest) -> bool:
    return guest.run(["grep", "-qw", "^vhba", "/proc/modules"], check=False).rc == 0
