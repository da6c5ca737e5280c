"""Data-path benchmark: one warm guest, one ISO, every drive stack, same run.

    .venv/bin/python -m bench.datapath            # full: 3 reps, 300 MB ISO (~30 min TCG)
    .venv/bin/python -m bench.datapath --quick    # smoke: 1 rep, 64 MB ISO, 3 stacks

Stacks (all on the reference kernel, trixie 6.12, in ONE guest):

    ours-ours            our vhba.ko + our Python responder (no CDB trace)
    ours-maxsectors2048  same, module loaded with max_sectors=2048 (1 MiB per command)
    ours-cdemu           our vhba.ko + Debian's cdemu-daemon
    upstream-cdemu       Debian's vhba-dkms source + cdemu-daemon   = THE BASELINE
    upstream-ours        Debian's vhba + our responder
    qemu-scsi-cd         QEMU's scsi-cd on virtio-scsi (host file, no guest userspace)
    scsi_debug           in-kernel scsi_debug as a CD-ROM (ptype=5, 2048-byte blocks,
                         delay=0), ISO written into its RAM store: the in-kernel limit
  optional (--stacks):
    ours-ours-trace      ours-ours with the CDB trace on (how the trace group runs it)
    scsi_debug-disk      scsi_debug as a disk (ptype=0, sector_size=2048) via sd

Every repetition visits every stack (interleaved, so host-load drift hits all
stacks alike), with the page cache dropped before each measurement.  Figures
are medians with min/max; ratios are speedups (> 1 = better, latency
inverted) against the baseline and against scsi_debug, both measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.assets import bench_iso, sglat_binary
from bench.stats import (
    check_target,
    fio_json,
    mb_per_s,
    parse_dd,
    parse_fio,
    ratio_table,
    summarize,
)
from lab.build.module import build_module, require_built
from lab.cell.drives import CdemuDaemon, Drive, DriveNode, OurResponder, find_nodes
from lab.cell.module import load_module, module_loaded
from lab.context import LabContext
from lab.errors import GuestLostError, GuestWaitError, LabError
from lab.paths import cache_root, repo_root
from lab.vm.guest import Guest
from lab.vm.session import boot

GUEST_DIR = "/root/bench"
GUEST_ISO_DISK = f"{GUEST_DIR}/bench.iso"  # --backing disk: the guest's virtio-blk disk
GUEST_RAM = f"{GUEST_DIR}/ram"  # --backing tmpfs (default): RAM, which drop_caches keeps
GUEST_SGLAT = f"{GUEST_DIR}/sglat"
MOUNT = "/mnt/bench"
UPSTREAM_SOURCE = "opt/vhba-upstream"
BASELINE = "upstream-cdemu"
REFERENCE = "scsi_debug"


@dataclass(frozen=True)
class Stack:
    name: str
    kind: str  # vhba | qemu | scsi_debug | scsi_debug-disk
    module: str | None = None  # ours | upstream
    drive: str | None = None  # ours | ours-trace | cdemu
    params: str = ""
    what: str = ""
    responder_args: tuple[str, ...] = ()


STACKS: dict[str, Stack] = {s.name: s for s in [
    Stack("ours-ours", "vhba", "ours", "ours", what="our vhba.ko + our responder"),
    Stack("ours-maxsectors2048", "vhba", "ours", "ours", "max_sectors=2048",
          "our vhba.ko max_sectors=2048 + our responder"),
    Stack("ours-cdemu", "vhba", "ours", "cdemu", what="our vhba.ko + cdemu-daemon"),
    Stack("upstream-cdemu", "vhba", "upstream", "cdemu",
          what="Debian vhba-dkms + cdemu-daemon (baseline)"),
    Stack("upstream-ours", "vhba", "upstream", "ours", what="Debian vhba-dkms + our responder"),
    Stack("qemu-scsi-cd", "qemu", what="QEMU scsi-cd on virtio-scsi (host file)"),
    Stack("scsi_debug", "scsi_debug",
          what="scsi_debug ptype=5 sector_size=2048 delay=0 (in-kernel CD)"),
    Stack("ours-ours-trace", "vhba", "ours", "ours-trace",
          what="ours-ours with the lab's CDB trace on (--trace)"),
    Stack("upstream-ours-threads1", "vhba", "upstream", "ours",
          what="upstream-ours, responder on one thread per drive (serial write()s)",
          responder_args=("--threads", "1")),
    Stack("ours-ours-nodirect", "vhba", "ours", "ours",
          what="ours-ours, every READ through the responder (--no-direct-reads)",
          responder_args=("--no-direct-reads",)),
    Stack("ours-ours-threads1", "vhba", "ours", "ours",
          what="ours-ours, responder on one thread per drive", responder_args=("--threads", "1")),
    Stack("scsi_debug-disk", "scsi_debug-disk",
          what="scsi_debug ptype=0 sector_size=2048 delay=0 (sd disk)"),
]}  # fmt: skip
DEFAULT_STACKS = [
    "ours-ours", "ours-ours-nodirect", "ours-cdemu", "ours-maxsectors2048", "upstream-cdemu",
    "upstream-ours", "qemu-scsi-cd", "scsi_debug",
]  # fmt: skip
QUICK_STACKS = ["ours-ours", "upstream-cdemu", "scsi_debug"]

METRICS: dict[str, dict[str, str]] = {
    "seq_direct_128k_MBps": {"unit": "MB/s", "better": "higher",
                             "what": "dd iflag=direct bs=128K over the whole ISO"},
    "seq_direct_1m_MBps": {"unit": "MB/s", "better": "higher",
                           "what": "dd iflag=direct bs=1M over the whole ISO"},
    "buffered_files_MBps": {"unit": "MB/s", "better": "higher",
                            "what": "cat of every file of the mounted ISO (page cache cold)"},
    "rand4k_qd1_iops": {"unit": "IOPS", "better": "higher",
                        "what": "fio randread 4 KiB, libaio, iodepth 1"},
    "rand4k_qd32_iops": {"unit": "IOPS", "better": "higher",
                         "what": "fio randread 4 KiB, libaio, iodepth 32"},
    "rand2k_qd1_iops": {"unit": "IOPS", "better": "higher",
                        "what": "fio randread 2 KiB (one block), libaio, iodepth 1"},
    "rand2k_qd32_iops": {"unit": "IOPS", "better": "higher",
                         "what": "fio randread 2 KiB (one block), libaio, iodepth 32"},
    "tur_latency_us": {"unit": "us", "better": "lower",
                       "what": "median SG_IO TEST UNIT READY round trip (sglat, 1000 cmds)"},
    "read2k_latency_us": {"unit": "us", "better": "lower",
                          "what": "median SG_IO READ(10) 1 block round trip (sglat, 1000 cmds)"},
    # What a drive costs to bring up (our module: a SCSI host per open, upstream:
    # one host for all); vhba stacks only, the module already loaded.
    "attach_s": {"unit": "s", "better": "lower",
                 "what": "start the drive program with the ISO until its sr node has the medium"},
    "attach16_s": {"unit": "s", "better": "lower",
                   "what": "the same with 16 drives of the ISO, until all 16 have it (opt-in)"},
}  # fmt: skip
DEFAULT_METRICS = [m for m in METRICS if m != "attach16_s"]  # 16 drives: ~1 min a stack (TCG)
MANY_DRIVES = 16
FIO_JOBS = {
    "rand4k_qd1_iops": ("4k", 1),
    "rand4k_qd32_iops": ("4k", 32),
    "rand2k_qd1_iops": ("2k", 1),
    "rand2k_qd32_iops": ("2k", 32),
}
TARGETS = [
    # issue 10: direct reads, now bounced and read with the responder's
    # credentials, must keep these over upstream vhba + cdemu-daemon
    ("ours-ours", "seq_direct_128k_MBps", 10.0),
    ("ours-ours", "seq_direct_1m_MBps", 2.0),
    ("ours-ours", "rand4k_qd1_iops", 4.0),
    ("ours-maxsectors2048", "seq_direct_1m_MBps", 2.0),
]
DROP = "sync; echo 3 > /proc/sys/vm/drop_caches"


class StackError(LabError):
    """A stack could not be brought up or measured (recorded, the run goes on)."""


class DataPathBench:
    def __init__(self, guest: Guest, machine: Any, iso: dict[str, Any], args: argparse.Namespace,
                 kos: dict[str, Path], say: Any) -> None:  # fmt: skip
        self.guest = guest
        self.machine = machine
        self.iso = iso
        self.args = args
        self.kos = kos
        self.say = say
        self.loaded: tuple[str, str] | None = None  # (module, params) in the guest
        self.scsi_debug: str | None = None  # which scsi_debug flavour is loaded
        self.drive: Drive | None = None
        self.attached_s: float | None = None  # what the last activate() took to start the drive
        self.broken: dict[str, str] = {}
        self.guest_iso = f"{GUEST_RAM}/bench.iso" if args.backing == "tmpfs" else GUEST_ISO_DISK

    # -- guest helpers -----------------------------------------------------------
    def sh(self, script: str, timeout: float = 900.0) -> str:
        """Shell text that must succeed; its stdout."""
        return self.guest.sh(script, timeout=timeout).stdout

    def cmd(self, argv: list[str], timeout: float = 900.0) -> str:
        """A command that must succeed; its stdout."""
        return self.guest.run(argv, timeout=timeout).stdout

    def devices(self) -> list[dict[str, str]]:
        out = self.sh(
            "for d in /sys/bus/scsi/devices/[0-9]*:*; do "
            'echo "$(basename $d)|$(cat $d/vendor 2>/dev/null)|$(cat $d/model 2>/dev/null)|'
            '$(cat $d/type 2>/dev/null)"; done'
        )
        rows = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 4:
                rows.append(dict(zip(("hctl", "vendor", "model", "type"), parts)))
        return rows

    def find(self, vendor: str, model: str | None = None) -> str:
        for dev in self.devices():
            if dev["vendor"] == vendor and (model is None or dev["model"] == model):
                return dev["hctl"]
        raise StackError(f"no SCSI device with vendor {vendor!r} model {model!r}")

    def block_node(self, hctl: str) -> DriveNode:
        return find_nodes(self.guest, hctl, timeout=30)

    def wait_capacity(self, dev: str, timeout: float = 60.0) -> int:
        """Open the device until the kernel sees the whole medium (sr revalidates on open)."""
        want = int(self.iso["bytes"])
        deadline = time.monotonic() + timeout
        while True:
            res = self.guest.run(["blockdev", "--getsize64", dev], check=False)
            size = int(res.stdout) if res.rc == 0 and res.stdout.strip().isdigit() else 0
            if size >= want:
                return size
            if time.monotonic() > deadline:
                raise StackError(f"{dev} shows {size} bytes, want >= {want}")
            time.sleep(0.5)

    # -- set-up ---------------------------------------------------------------
    def prepare(self, sglat: Path) -> dict[str, Any]:
        """Tools and the ISO into the guest; the ISO arrives through QEMU's scsi-cd."""
        info: dict[str, Any] = {}
        self.cmd(["mkdir", "-p", GUEST_DIR, GUEST_RAM, MOUNT])
        self.cmd(["modprobe", "-a", "scsi_mod", "sr_mod", "sg", "cdrom"])
        if self.args.backing == "tmpfs":
            size_mb = int(self.iso["bytes"]) // (1 << 20) + 32
            self.cmd(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "bench", GUEST_RAM])
        self.guest.upload(sglat, GUEST_SGLAT, mode=0o755)
        OurResponder(self.guest).ship()
        started = time.monotonic()
        self.machine.change_medium(Path(self.iso["path"]))
        node = self.block_node(self.find("QEMU"))
        self.wait_capacity(node.sr)
        self.cmd(["dd", f"if={node.sr}", f"of={self.guest_iso}", "bs=1M", "status=none",
                  "iflag=direct,count_bytes", f"count={self.iso['bytes']}"])  # fmt: skip
        self.cmd(["sync"])
        info["copy_in_seconds"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        digest = self.cmd(["sha256sum", self.guest_iso]).split()[0]
        info["sha256_seconds"] = round(time.monotonic() - started, 1)
        if digest != self.iso["sha256"]:
            raise LabError(
                f"ISO copied into the guest is corrupt: {digest} != {self.iso['sha256']}"
            )
        # What the vhba stacks' drives read from (tmpfs: RAM; disk: virtio-blk, cache cold).
        self.sh(DROP)
        flag = [] if self.args.backing == "tmpfs" else ["iflag=direct"]
        dd = self.guest.run(["env", "LC_ALL=C", "dd", f"if={self.guest_iso}", "of=/dev/null",
                             "bs=1M", *flag], timeout=900, check=False)  # fmt: skip
        nbytes, secs = parse_dd(dd.stderr)
        info["backing_file_direct_MBps"] = mb_per_s(nbytes, secs)
        return info

    def _ensure_module(self, module: str, params: str) -> None:
        want = (module, params)
        if self.loaded == want:
            return
        if self.loaded is not None or module_loaded(self.guest):
            # The drive's devices go away asynchronously after it closes its fds.
            try:
                self.guest.wait_for(["rmmod", "vhba"], timeout=30, interval=0.5)
            except GuestWaitError as exc:
                raise StackError(f"cannot unload vhba: {exc}") from None
            self.loaded = None
        load_module(self.guest, self.kos[module], params)
        self.loaded = want

    def _ensure_scsi_debug(self, flavour: str) -> DriveNode:
        if self.scsi_debug != flavour:
            self.guest.run(["rmmod", "scsi_debug"], check=False)
            size_mb = int(self.iso["bytes"]) // (1 << 20) + 2
            ptype = 5 if flavour == "scsi_debug" else 0
            self.cmd(["modprobe", "scsi_debug", "delay=0", f"ptype={ptype}", "sector_size=2048",
                      f"dev_size_mb={size_mb}"])  # fmt: skip
            self.cmd(["udevadm", "settle", "-t", "20"])
            node = self.block_node(self.find("Linux", "scsi_debug"))
            if ptype == 5:  # sr is read-only: write the ISO with WRITE(10) through sg
                self.cmd(["sg_dd", f"if={self.guest_iso}", f"of={node.sg}", "bs=2048", "bpt=512"])
            else:
                self.cmd(["dd", f"if={self.guest_iso}", f"of={node.sr}", "bs=1M",
                          "oflag=direct", "status=none"])  # fmt: skip
            self.scsi_debug = flavour
        return self.block_node(self.find("Linux", "scsi_debug"))

    def _start_drives(self, stack: Stack, count: int) -> tuple[list[DriveNode], float]:
        """Start ``stack``'s drive program with the ISO in ``count`` drives; their nodes
        and the seconds until every one of them has the whole medium."""
        assert stack.drive
        media: list[str | None] = [self.guest_iso] * count
        timeout = 60.0 + 10.0 * count
        started = time.monotonic()
        if stack.drive == "cdemu":
            self.drive = CdemuDaemon(self.guest)
            nodes = self.drive.start(media, timeout=timeout)
        else:
            ours = self.drive = OurResponder(self.guest)
            # Traced: exactly what the lab's cells run; untraced: a user's plain invocation.
            nodes = ours.start(media, timeout=timeout, trace=stack.drive == "ours-trace",
                               extra_args=stack.responder_args)  # fmt: skip
        for node in nodes:
            self.wait_capacity(node.sr)
        return nodes, round(time.monotonic() - started, 3)

    def activate(self, stack: Stack) -> DriveNode:
        self.attached_s = None
        if stack.kind == "vhba":
            assert stack.module
            self._ensure_module(stack.module, stack.params)
            nodes, self.attached_s = self._start_drives(stack, 1)
            return nodes[0]
        if stack.kind == "qemu":
            node = self.block_node(self.find("QEMU"))
        else:
            node = self._ensure_scsi_debug(stack.kind)
        self.wait_capacity(node.sr)
        return node

    def attach_many(self, stack: Stack) -> tuple[float | None, dict[str, Any]]:
        """Stop the one-drive program, start it with MANY_DRIVES drives (left running:
        :meth:`deactivate` stops it)."""
        self.deactivate()
        nodes, seconds = self._start_drives(stack, MANY_DRIVES)
        if len(nodes) != MANY_DRIVES:
            raise StackError(f"{len(nodes)} drives came up, {MANY_DRIVES} were started")
        return seconds, {"drives": len(nodes)}

    def data_check(self, node: DriveNode) -> str | None:
        """Does the device serve the ISO's bytes?  (First 32 MiB, buffered; None = yes.)

        A mismatch is recorded with the stack's figures, which are still measured:
        a wrong-data stack is a correctness bug, and its speed is still worth knowing.
        """
        self.sh(DROP)
        check = self.guest.run(["cmp", "-n", "33554432", node.sr, self.guest_iso], timeout=600,
                               check=False)  # fmt: skip
        if check.rc == 0:
            return None
        return f"{node.sr} does not return the ISO's data: {(check.stdout + check.stderr).strip()}"

    def deactivate(self) -> None:
        self.guest.run(["umount", MOUNT], check=False)
        if self.drive is not None:
            try:
                self.drive.stop()
            except GuestLostError:
                raise
            except (LabError, OSError):
                pass
            self.drive = None

    def device_info(self, node: DriveNode) -> dict[str, Any]:
        name = Path(node.sr).name
        q = f"/sys/block/{name}/queue"
        sizes = ("max_hw_sectors_kb", "max_sectors_kb", "read_ahead_kb", "logical_block_size")
        out = self.cmd(["cat", *(f"{q}/{name}" for name in sizes)]).split()
        out.append(self.cmd(["blockdev", "--getsize64", node.sr]).strip())
        return {
            "hctl": node.hctl, "sr": node.sr, "sg": node.sg,
            "max_hw_sectors_kb": int(out[0]), "max_sectors_kb": int(out[1]),
            "read_ahead_kb": int(out[2]), "logical_block_size": int(out[3]),
            "bytes": int(out[4]),
        }  # fmt: skip

    # -- measurements --------------------------------------------------------------
    def dd(self, dev: str, bs: str, retry: bool = True) -> tuple[float | None, dict[str, Any]]:
        self.sh(DROP)
        res = self.guest.run(
            ["env", "LC_ALL=C", "dd", f"if={dev}", "of=/dev/null", f"bs={bs}",
             "iflag=direct,count_bytes", f"count={self.iso['bytes']}"],
            timeout=1800, check=False,
        )  # fmt: skip
        if res.rc != 0:
            raise StackError(f"dd bs={bs} failed: {res.stderr.strip()[-300:]}")
        try:
            nbytes, secs = parse_dd(res.stderr)
        except ValueError:
            # lab.vm.guest.Guest.run can return before the last stderr bytes arrive
            # (it stops reading once the exit status is in): measure again, once.
            if not retry:
                raise
            return self.dd(dev, bs, retry=False)
        if nbytes != int(self.iso["bytes"]):
            raise StackError(f"dd read {nbytes} bytes, the ISO has {self.iso['bytes']}")
        return mb_per_s(nbytes, secs), {"bytes": nbytes, "seconds": secs}

    def buffered(self, dev: str) -> tuple[float | None, dict[str, Any]]:
        """cat every file of the mounted ISO to /dev/null, page cache cold.

        (Not through a pipe: under TCG a pipe into ``wc -c`` alone caps at ~13 MB/s.)
        The device's own I/O counters prove the data was read and give the
        average request size the readahead produced.
        """
        stat = f"/sys/block/{Path(dev).name}/stat"
        script = (
            f"mount -t iso9660 -o ro {dev} {MOUNT} || exit 1; {DROP}; a=$(cat {stat}); "
            f"s=$(date +%s.%N); find {MOUNT} -type f -print0 | xargs -0 cat > /dev/null; "
            f'rc=$?; e=$(date +%s.%N); b=$(cat {stat}); echo "T $s $e"; echo "A $a"; '
            f'echo "B $b"; umount {MOUNT}; exit $rc'
        )
        res = self.guest.sh(script, timeout=1800, check=False)
        rows = {line.split()[0]: line.split()[1:] for line in res.stdout.splitlines() if line}
        if res.rc != 0 or not {"T", "A", "B"} <= rows.keys():
            raise StackError(f"buffered read failed: {res.stderr.strip()[-300:]}")
        secs = float(rows["T"][1]) - float(rows["T"][0])
        ios = int(rows["B"][0]) - int(rows["A"][0])
        sectors = int(rows["B"][2]) - int(rows["A"][2])
        nbytes = int(self.iso["file_bytes"])
        if sectors * 512 < nbytes:
            raise StackError(f"the device read {sectors * 512} bytes, the files hold {nbytes}")
        return mb_per_s(nbytes, secs), {
            "seconds": round(secs, 3), "file_bytes": nbytes, "device_read_bytes": sectors * 512,
            "device_read_ios": ios, "avg_io_kib": round(sectors / 2 / ios, 1) if ios else None,
        }  # fmt: skip

    def fio(self, dev: str, bs: str, depth: int) -> tuple[float | None, dict[str, Any]]:
        base = [
            "fio", "--name=bench", f"--filename={dev}", "--readonly", "--ioengine=libaio",
            "--rw=randread", f"--bs={bs}", f"--iodepth={depth}", f"--size={self.iso['bytes']}",
            f"--runtime={self.args.fio_runtime}", "--time_based", "--output-format=json",
        ]  # fmt: skip
        limit = self.args.fio_runtime + 300
        self.sh(DROP)
        res = self.guest.run([*base, "--direct=1"], timeout=limit, check=False)
        direct = True
        if res.rc != 0:
            direct = False
            self.sh(DROP)
            res = self.guest.run([*base, "--direct=0"], timeout=limit, check=False)
        if res.rc != 0:
            raise StackError(f"fio bs={bs} qd={depth} failed: {res.stderr.strip()[-300:]}")
        parsed = parse_fio(fio_json(res.stdout))
        parsed["direct"] = direct
        if parsed["errors"]:
            raise StackError(f"fio bs={bs} qd={depth} reported error {parsed['errors']}")
        return parsed["iops"], parsed

    def latency(self, sg: str, what: str) -> tuple[float | None, dict[str, Any]]:
        res = self.guest.run([GUEST_SGLAT, sg, str(self.args.lat_count), what], timeout=600,
                             check=False)  # fmt: skip
        if res.rc != 0:
            raise StackError(f"sglat {what} failed: {res.stderr.strip()}")
        doc = json.loads(res.stdout)
        if doc["errors"]:
            raise StackError(f"sglat {what}: {doc['errors']} of {doc['n']} commands failed")
        return doc["p50_us"], doc

    def measure(
        self, stack: Stack, node: DriveNode
    ) -> dict[str, tuple[float | None, dict[str, Any]]]:
        out: dict[str, tuple[float | None, dict[str, Any]]] = {}
        wanted = self.args.metrics
        if stack.kind != "vhba":  # no drive program to start
            wanted = [m for m in wanted if m not in ("attach_s", "attach16_s")]
        steps = {
            "seq_direct_128k_MBps": lambda: self.dd(node.sr, "128K"),
            "seq_direct_1m_MBps": lambda: self.dd(node.sr, "1M"),
            "buffered_files_MBps": lambda: self.buffered(node.sr),
            **{m: (lambda bs=bs, qd=qd: self.fio(node.sr, bs, qd))
               for m, (bs, qd) in FIO_JOBS.items()},
            "tur_latency_us": lambda: self.latency(node.sg, "tur"),
            "read2k_latency_us": lambda: self.latency(node.sg, "read"),
            "attach_s": lambda: (self.attached_s, {}),
            "attach16_s": lambda: self.attach_many(stack),  # last: it replaces the drive
        }  # fmt: skip
        for metric, step in steps.items():
            if metric not in wanted:
                continue
            try:
                out[metric] = step()
            except (LabError, ValueError, KeyError) as exc:
                out[metric] = (None, {"error": str(exc)[:500]})
                self.say(f"    {metric}: FAILED {str(exc)[:200]}")
                continue
            self.say(f"    {metric}: {out[metric][0]}")
        return out


def summarize_stacks(
    results: dict[str, dict[str, Any]], metrics: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """Per-stack medians/spreads from the reps, speedup tables and the targets.

    ``results[stack]["reps"]`` is a list of ``{"metrics": {metric: value|None}}``.
    """
    for res in results.values():
        res["metrics"] = {m: summarize(r["metrics"].get(m) for r in res["reps"]) for m in metrics}
    vs_base = ratio_table(results, BASELINE, metrics)
    vs_ref = ratio_table(results, REFERENCE, metrics)
    return {
        "baseline": BASELINE,
        "reference": REFERENCE,
        "metrics": metrics,
        "stacks": results,
        "ratios": {"vs_baseline": vs_base, "vs_reference": vs_ref},
        "targets": [
            check_target(vs_base, s, m, w) for s, m, w in TARGETS if s in results and m in metrics
        ],
    }


def _build_kos(ctx: LabContext, image: Any, stacks: list[Stack], logs: Path) -> dict[str, Path]:
    kos: dict[str, Path] = {}
    modules = {s.module for s in stacks if s.module}
    if "ours" in modules:
        kos["ours"] = require_built(build_module(image, logs / "ours" / "build.log"))
    if "upstream" in modules:
        found = sorted((image.tree / UPSTREAM_SOURCE).glob("usr/src/vhba-*"))
        if not found:
            raise LabError(f"no upstream vhba source under {image.tree / UPSTREAM_SOURCE}")
        kos["upstream"] = require_built(
            build_module(image, logs / "upstream" / "build.log", werror=False, source=found[-1])
        )
    return kos


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=repo_root(), check=False)  # fmt: skip
    return out.stdout.strip() or "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    ctx = LabContext(accel_request=args.accel)
    say = ctx.say
    stacks = [STACKS[name] for name in args.stacks]
    phases: dict[str, float] = {}
    kernel = ctx.catalogue.resolve(args.kernel)
    image = ctx.image_for(kernel)
    work = cache_root() / "runs" / f"bench-datapath-{stamp}"
    t = time.monotonic()
    kos = _build_kos(ctx, image, stacks, work)
    phases["module_builds_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    iso = bench_iso(image, args.iso_mb)
    sglat = sglat_binary(image)
    phases["host_assets_s"] = round(time.monotonic() - t, 1)
    how = "cached" if iso["cached"] else "built"
    say(f"ISO {iso['bytes'] / 1e6:.0f} MB, {iso['files']} files ({how})")
    results: dict[str, dict[str, Any]] = {
        s.name: {"what": s.what, "module": s.module, "drive": s.drive, "params": s.params,
                 "reps": [], "errors": []}
        for s in stacks
    }  # fmt: skip
    load_start = _loadavg()
    t = time.monotonic()
    with boot(image, work / "guest", ctx.accel, warm=True, progress=say) as booted:
        phases["guest_ready_s"] = round(booted.ready_seconds, 1)
        bench = DataPathBench(booted.guest, booted.machine, iso, args, kos, say)
        prep = bench.prepare(sglat)
        phases["guest_prepare_s"] = round(time.monotonic() - t, 1)
        say(f"ISO in the guest in {prep['copy_in_seconds']} s via QEMU scsi-cd; "
            f"backing file reads at {prep['backing_file_direct_MBps']} MB/s")  # fmt: skip
        for rep in range(args.reps):
            for stack in stacks:
                res = results[stack.name]
                if stack.name in bench.broken:
                    continue
                say(f"rep {rep + 1}/{args.reps} {stack.name}")
                t0 = time.monotonic()
                try:
                    node = bench.activate(stack)
                    if "device" not in res:
                        res["device"] = bench.device_info(node)
                    bad = bench.data_check(node)
                    if bad:
                        res["data_ok"] = False
                        res["errors"].append(f"rep {rep + 1}: DATA MISMATCH: {bad}")
                        say(f"  {stack.name}: DATA MISMATCH: {bad}")
                    else:
                        res.setdefault("data_ok", True)
                    measured = bench.measure(stack, node)
                except LabError as exc:
                    bench.broken[stack.name] = str(exc)[:800]
                    res["errors"].append(f"rep {rep + 1}: set-up failed: {str(exc)[:800]}")
                    say(f"  {stack.name}: set-up FAILED: {str(exc)[:300]}")
                    with contextlib.suppress(LabError, OSError):
                        bench.deactivate()
                    continue
                bench.deactivate()
                res["reps"].append({
                    "rep": rep + 1, "seconds": round(time.monotonic() - t0, 1),
                    "metrics": {m: v for m, (v, _) in measured.items()},
                    "detail": {m: d for m, (_, d) in measured.items()},
                })  # fmt: skip
                for m, (v, d) in measured.items():
                    if v is None:
                        res["errors"].append(f"rep {rep + 1}: {m}: {d.get('error')}")
        with contextlib.suppress(LabError, OSError):
            (work / "dmesg.txt").write_text(booted.guest.run(["dmesg"], timeout=60).stdout)
    phases["total_s"] = round(time.monotonic() - started, 1)
    metrics = {m: METRICS[m] for m in args.metrics}
    report = {
        "benchmark": "datapath",
        "schema": 1,
        "timestamp": stamp,
        "accel": {"name": ctx.accel.name, "reason": ctx.accel.reason},
        "kernel": {"series": kernel.series, "abi": kernel.abi, "release": kernel.release},
        "image": image.path.name,
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": load_start,
            "loadavg_end": _loadavg(),
            "lab_commit": _git_commit(),
        },
        "options": {
            "reps": args.reps,
            "iso_mb": args.iso_mb,
            "fio_runtime_s": args.fio_runtime,
            "latency_commands": args.lat_count,
            "backing": args.backing,
            "stacks": args.stacks,
            "quick": args.quick,
        },
        "iso": {
            **{k: v for k, v in iso.items() if k != "path"},
            **prep,
            "transfer": "host ISO inserted into QEMU's scsi-cd, copied in the guest with dd",
        },
        **summarize_stacks(results, metrics),
        "phases": phases,
        "workdir": str(work),
    }
    return report


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["timestamp"]
    paths = {"json": out_dir / f"datapath-{stamp}.json"}
    text = json.dumps(report, indent=2) + "\n"
    paths["json"].write_text(text)
    (out_dir / "datapath-latest.json").write_text(text)
    try:
        from bench.chart import ratio_chart

        png = out_dir / f"datapath-{stamp}.png"
        if ratio_chart(report, png):
            paths["png"] = png
    except ImportError as exc:  # matplotlib is optional (pip install matplotlib)
        print(f"bench: no chart ({exc})", file=sys.stderr)
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.datapath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 rep, 64 MB ISO, 3 s fio, stacks " + ",".join(QUICK_STACKS),
    )
    p.add_argument("--stacks", help="comma-separated stacks (default: the 7 standard ones); "
                   f"known: {','.join(STACKS)}")  # fmt: skip
    p.add_argument("--metrics", help=f"comma-separated subset of: {','.join(METRICS)} "
                   "(default: all but attach16_s)")  # fmt: skip
    p.add_argument("--reps", type=int, help="repetitions (default 3; --quick 1)")
    p.add_argument("--iso-mb", type=int, help="ISO file data in MiB (default 300; --quick 64)")
    p.add_argument("--fio-runtime", type=int, help="seconds per fio job (default 10; --quick 3)")
    p.add_argument(
        "--backing",
        choices=["tmpfs", "disk"],
        default="tmpfs",
        help="where the vhba drives' ISO lives in the guest: tmpfs (default; RAM like "
        "scsi_debug, so the data path is measured) or the guest disk (dropped caches make "
        "every random read a virtio-blk read)",
    )
    p.add_argument("--lat-count", type=int, default=1000, help="commands per latency sample")
    p.add_argument("--kernel", default="6.12", help="kernel (default: the reference, 6.12)")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=None)
    p.add_argument("--out", type=Path, default=Path("reports/bench"), help="output directory")
    args = p.parse_args(argv)
    q = args.quick
    args.reps = args.reps or (1 if q else 3)
    args.iso_mb = args.iso_mb or (64 if q else 300)
    args.fio_runtime = args.fio_runtime or (3 if q else 10)
    stacks = args.stacks.split(",") if args.stacks else (QUICK_STACKS if q else DEFAULT_STACKS)
    unknown = [s for s in stacks if s not in STACKS]
    if unknown:
        p.error(f"unknown stacks {unknown}; known: {', '.join(STACKS)}")
    args.stacks = stacks
    metrics = args.metrics.split(",") if args.metrics else DEFAULT_METRICS
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        p.error(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
    args.metrics = metrics
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except LabError as exc:
        print(f"bench.datapath: error: {exc}", file=sys.stderr)
        return 2
    paths = write_outputs(report, args.out)
    print(json.dumps(report, indent=2))
    for kind, path in paths.items():
        print(f"bench.datapath: {kind} {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
