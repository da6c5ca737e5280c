"""vhba_responder: a userspace MMC CD/DVD-ROM drive served on /dev/vhba_ctl.

The package is split so the SCSI emulation (``device``, ``commands``, ``media``,
``sense``) never imports the kernel transport (``protocol``, ``server``): the
emulation is therefore unit-testable with plain CDB bytes.
"""

__version__ = "0.1.0"
