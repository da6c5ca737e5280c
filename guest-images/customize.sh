#!/bin/sh
# Runs on the host after mmdebstrap, with $1 = the image's root tree.
# Makes the guest boot fast and reachable: static network, no timers, volatile journal.
set -eu
root="$1"

echo vhba-lab > "$root/etc/hostname"
printf '127.0.1.1\tvhba-lab\n' >> "$root/etc/hosts"
printf '/dev/vda\t/\text4\tdefaults,noatime\t0\t1\n' > "$root/etc/fstab"

# QEMU's user network always hands out 10.0.2.15; skipping DHCP saves seconds.
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/10-eth0.network" <<'NET'
[Match]
Name=eth0

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
DNS=10.0.2.3
NET
chroot "$root" systemctl enable systemd-networkd.service
chroot "$root" systemctl enable ssh.service 2>/dev/null || true
# OpenSSH >= 9.8 penalises a source whose connections end before authentication:
# the lab's probes of a slowly booting guest (a debug kernel under TCG) do that,
# all from one address, and were then refused ("Not allowed at this time").
if grep -q PerSourcePenalties "$root/usr/sbin/sshd" 2>/dev/null; then
    mkdir -p "$root/etc/ssh/sshd_config.d"
    printf 'PerSourcePenalties no\n' > "$root/etc/ssh/sshd_config.d/vhba-lab.conf"
fi

# Nothing periodic may run during a test.
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
            fstrim.timer dpkg-db-backup.timer systemd-networkd-wait-online.service \
            systemd-timesyncd.service; do
    chroot "$root" systemctl mask "$unit" >/dev/null 2>&1 || true
done

mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/volatile.conf"

# Console login for debugging through the serial log; the lab itself uses ssh keys.
chroot "$root" passwd -d root >/dev/null

# Users for permission tests: one in group cdrom, one outside it.
chroot "$root" useradd -m -s /bin/sh -G cdrom labuser
chroot "$root" useradd -m -s /bin/sh outsider

# The lab, not a distro default, decides which vhba module is loaded.
rm -f "$root/etc/modules-load.d/vhba.conf"

# Debian's upstream vhba source, for the cross-stack cells (built by the lab like ours,
# not by dkms at install time: a failing upstream build must not break the image).
chroot "$root" sh -c 'cd /tmp && apt-get download -q vhba-dkms >/dev/null 2>&1 &&
    mkdir -p /opt/vhba-upstream && dpkg-deb -x vhba-dkms_*.deb /opt/vhba-upstream &&
    rm -f vhba-dkms_*.deb' || echo "customize: no vhba-dkms in this release" >&2
