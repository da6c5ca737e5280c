"""Cell: one kernel x module x responder combination, brought up for the suite.

A cell's id and the default matrix, bringing its stack up and down (image,
module, guest, drive), loading vhba in the guest, starting the responder or
cdemu behind one drive interface, the kernel health checks and sanitizer
reports around every test, what the cell leaves behind (cell.json), and its
state, with the cause named when its guest is lost.
"""
