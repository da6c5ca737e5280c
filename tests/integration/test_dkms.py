"""The DKMS path a user takes: dkms add/build/install in the guest, autoload at boot,
and the shipped udev rule deciding who may open /dev/vhba_ctl."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.context import LabContext
from lab.images import Image
from lab.module import MODULE_SOURCE
from lab.session import boot

pytestmark = pytest.mark.integration


def _version() -> str:
    match = re.search(r'^PACKAGE_VERSION="?([^"\n]+)"?', (MODULE_SOURCE / "dkms.conf").read_text(),
                      re.M)  # fmt: skip
    assert match, "dkms.conf has no PACKAGE_VERSION"
    return match.group(1)


def _open_as(user: str) -> str:
    probe = "import sys\ntry:\n open('/dev/vhba_ctl','r+b').close(); print('opened')\n" \
            "except PermissionError: print('denied')"  # fmt: skip
    return f'runuser -u {user} -- python3 -c "{probe}"'


def test_dkms_install_autoloads_at_boot_and_udev_rule_grants_group_cdrom(
    lab: LabContext, reference_image: Image, tmp_path: Path
) -> None:
    version = _version()
    src = f"/usr/src/vhba-{version}"
    disk = tmp_path / "persistent.qcow2"
    with boot(reference_image, tmp_path / "first", lab.accel) as booted:
        guest = booted.guest
        guest.run(f"mkdir -p {src}/udev {src}/modules-load.d", check=True)
        for path in sorted(MODULE_SOURCE.rglob("*")):
            if path.is_file() and not path.name.endswith((".o", ".ko", ".cmd")):
                guest.upload(path, f"{src}/{path.relative_to(MODULE_SOURCE)}")
        for step in ("add", "build", "install"):
            result = guest.run(f"dkms {step} -m vhba -v {version}", timeout=1200)
            assert result.rc == 0, f"dkms {step}: {result.stdout}\n{result.stderr}"
        guest.run(
            f"install -m 644 {src}/udev/61-vhba-cdrom-group.rules /etc/udev/rules.d/ && "
            f"install -m 644 {src}/modules-load.d/vhba.conf /etc/modules-load.d/ && sync",
            check=True,
        )
        # Keep this guest's disk for the reboot below (a copy of its overlay).
        guest.run("sync", check=True)
        assert booted.machine.poweroff(), "guest did not power off cleanly"
        (tmp_path / "first" / "disk.qcow2").rename(disk)
    with boot(reference_image, tmp_path / "second", lab.accel, disk=disk) as booted:
        guest = booted.guest
        loaded = guest.run("grep -w ^vhba /proc/modules; modinfo -n vhba").stdout
        assert loaded.startswith("vhba "), f"vhba not autoloaded at boot: {loaded}"
        assert "/updates/dkms/" in loaded, f"loaded module is not the DKMS one: {loaded}"
        guest.run("udevadm settle -t 30", check=True)
        mode = guest.run("stat -c '%a %G' /dev/vhba_ctl", check=True).stdout.split()
        assert mode == ["660", "cdrom"], mode
        assert guest.run(_open_as("labuser")).stdout.strip() == "opened"
        assert guest.run(_open_as("outsider")).stdout.strip() == "denied"
