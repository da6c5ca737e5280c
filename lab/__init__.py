"""vhba-lab: boot real Debian kernels in QEMU and test a VHBA module on them."""
