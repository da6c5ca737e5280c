"""VM: booting a built image in QEMU and talking to the guest.

Choosing the accelerator (KVM or TCG) and the QEMU binary, one QEMU process
with its QMP monitor, serial log and snapshots, a booted guest for one run
(fresh overlay, warm-snapshot restore, the one early-boot retry), and the ssh
channel every command in the guest goes through.
"""
