"""Catalogue: which Debian kernels exist and how to fetch their files.

The first stage of the lab.  It reads the host's apt mirror configuration,
downloads and sha256-checks the archive's InRelease and Packages indices and
.deb files into the cache, and resolves kernel names (a series like ``6.12``,
a suite, an exact version, or a local ``--kernel DIR``) to the packages every
later stage builds on.
"""
