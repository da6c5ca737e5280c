"""The DKMS path a user takes: dkms add/build/install in the guest, autoload at boot,
and the shipped udev rule deciding who may open /dev/vhba_ctl."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.build.images import Image
from lab.build.module import MODULE_SOURCE
from lab.context import LabContext
from lab.vm.guest import command_text
from lab.vm.session import boot

pytestmark = pytest.mark.integration


def _version() -> str:
    match = re.search(r'^PACKAGE_VERSION="?([^"\n]+)"?', (MODULE_SOURCE / "dkms.conf").read_text(),
                      re.M)  # fmt: skip
    assert match, "dkms.conf has no PACKAGE_VERSION"
    return match.group(1)


def _open_as(user: str) -> list[str]:
    """argv: as ``user``, try to open /dev/vhba_ctl; prints opened or denied."""
    probe = "import sys\ntry:\n open('/dev/vhba_ctl','r+b').close(); print('opened')\n" \
            "except PermissionError: print('denied')"  # fmt: skip
    return ["runuser", "-u", user, "--", "python3", "-c", probe]


def test_dkms_install_autoloads_at_boot_and_udev_rule_grants_group_cdrom(
    lab: LabContext, reference_image: Image, tmp_path: Path
) -> None:
    version = _version()
    src = f"/usr/src/vhba-{version}"
    disk = tmp_path / "persistent.qcow2"
    with boot(reference_image, tmp_path / "first", lab.accel) as booted:
        guest = booted.guest
        guest.run(["mkdir", "-p", f"{src}/udev", f"{src}/modules-load.d"])
        for path in sorted(MODULE_SOURCE.rglob("*")):
            if path.is_file() and not path.name.endswith((".o", ".ko", ".cmd")):
                guest.upload(path, f"{src}/{path.relative_to(MODULE_SOURCE)}")
        for step in ("add", "build", "install"):
            result = guest.run(
                ["dkms", step, "-m", "vhba", "-v", version], timeout=1200, check=False
            )
            assert result.rc == 0, f"dkms {step}: {result.stdout}\n{result.stderr}"
        rules = [f"{src}/udev/61-vhba-cdrom-group.rules", "/etc/udev/rules.d/"]
        load = [f"{src}/modules-load.d/vhba.conf", "/etc/modules-load.d/"]
        guest.sh(
            f"{command_text(['install', '-m', '644', *rules])} && "
            f"{command_text(['install', '-m', '644', *load])} && sync"
        )
        # Keep this guest's disk for the reboot below (a copy of its overlay).
        guest.run(["sync"])
        assert booted.machine.poweroff(), "guest did not power off cleanly"
        (tmp_path / "first" / "disk.qcow2").rename(disk)
    with boot(reference_image, tmp_path / "second", lab.accel, disk=disk) as booted:
        guest = booted.guest
        loaded = guest.sh("grep -w ^vhba /proc/modules; modinfo -n vhba", check=False).stdout
        assert loaded.startswith("vhba "), f"vhba not autoloaded at boot: {loaded}"
        assert "/updates/dkms/" in loaded, f"loaded module is not the DKMS one: {loaded}"
        guest.run(["udevadm", "settle", "-t", "30"])
        mode = guest.run(["stat", "-c", "%a %G", "/dev/vhba_ctl"]).stdout.split()
        assert mode == ["660", "cdrom"], mode
        assert guest.run(_open_as("labuser")).stdout.strip() == "opened"
        assert guest.run(_open_as("outsider")).stdout.strip() == "denied"
