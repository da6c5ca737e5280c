"""Building a vhba.ko for a kernel, on the host, before any guest boots.

The build runs by chroot in the image's own root tree: the same gcc, headers
and kbuild a DKMS user of that kernel has, at native speed.  (A TCG guest is
many times slower, and the host's own gcc cannot build every kernel's
headers.)  The log is always kept, because a failed build is a result.

A build stage of its own, apart from loading the module into a guest
(lab/cell/module.py): the compile matrix, a cell and the benchmarks all
build through here, and nothing here needs a guest.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from lab.build.images import Image
from lab.errors import ModuleBuildError
from lab.paths import repo_root

MODULE_SOURCE = repo_root() / "module"
# gcc's "warning:" lines; kbuild's own "WARNING: modpost" lines count too.
_WARNING = re.compile(r"(warning:|WARNING:)")
BUILD_TIMEOUT = 600


@dataclass(frozen=True)
class BuildResult:
    abi: str
    ok: bool
    warnings: int
    seconds: float
    log: Path
    ko: Path | None


# Deliberate bugs our module can be built with (module/Makefile INJECT=), to check
# that the lab's debug kernels catch them; never for anything but that check.
MODULE_FAULTS = ("uaf", "leak")


def build_module(
    image: Image,
    log_path: Path,
    *,
    werror: bool = True,
    source: Path = MODULE_SOURCE,
    inject: str | None = None,
) -> BuildResult:
    """Compile ``source`` against the image's kernel headers inside its root tree.

    ``inject`` (one of MODULE_FAULTS) builds our module with that deliberate bug.
    """
    import time

    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    inside = Path("/var/tmp") / f"vhba-build-{uuid.uuid4().hex[:8]}"
    build_dir = image.tree / inside.relative_to("/")
    shutil.copytree(
        source,
        build_dir,
        ignore=shutil.ignore_patterns(
            "*.o", "*.ko", "*.mod", "*.mod.c", ".*.cmd", "Module.symvers", "modules.order"
        ),
    )
    make = shlex.join([
        "make", "-C", str(image.headers_dir), f"M={inside}", "modules",
        *(["WERROR=1"] if werror else []), *([f"INJECT={inject}"] if inject else []),
    ])  # fmt: skip
    # objtool (6.19+) reads /proc: mount it in a private mount namespace, so the mount
    # vanishes with the build even if it is killed, and parallel builds never collide.
    tree = shlex.quote(str(image.tree))
    cmd = [
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        f"mount -t proc proc {tree}/proc && exec chroot {tree} {make}",
    ]  # fmt: skip
    try:
        with log_path.open("wb") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            try:
                proc = subprocess.run(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
                )
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                out.write(f"\nvhba-lab: build killed after {BUILD_TIMEOUT} s\n".encode())
                rc = -1
        text = log_path.read_text(errors="replace")
        warnings = len(_WARNING.findall(text))
        built = build_dir / "vhba.ko"
        ko = None
        if rc == 0 and built.exists():
            ko = log_path.parent / "vhba.ko"
            shutil.copy2(built, ko)
        return BuildResult(
            image.abi, ko is not None, warnings, round(time.monotonic() - started, 1), log_path, ko
        )
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)


def require_built(result: BuildResult) -> Path:
    if result.ko is None:
        tail = "\n".join(result.log.read_text(errors="replace").splitlines()[-20:])
        raise ModuleBuildError(
            f"module did not build for {result.abi}; build log {result.log}:\n{tail}"
        )
    return result.ko
