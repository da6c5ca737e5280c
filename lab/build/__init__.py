"""Build: what the lab makes on the host before any guest boots.

Guest images (a Debian root tree, its qcow2 disk, kernel and initrd, with a
catalogue kernel or a build tree installed), debug kernels rebuilt from
Debian's source with sanitizers, the module trees a run tests (``--module``),
vhba.ko built from ours or theirs for a kernel in its image's root tree and the
compile matrix over them, and the deterministic ISO and CD media the tests put
into drives.  Everything here but the vhba.ko builds (made afresh, their logs
kept) is cached and content-addressed.
"""
