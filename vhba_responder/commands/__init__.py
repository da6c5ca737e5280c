"""SCSI/MMC command handlers, one module per command family.

Each module exports ``COMMANDS``: a tuple of :class:`~.base.CommandSpec` rows.
``vhba_responder.device`` merges them into the opcode dispatch table.
"""
