"""Debug kernels: fragment, option check, cache keys, names and cells (no network, no build)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from fixtures.fake_mirror import SECURITY, trixie_context

from lab.build.debug_kernel import (
    DEBUG_OPTIONS,
    GUEST_OPTIONS,
    RECIPE_VERSION,
    DebugConfigError,
    DebugKernelStore,
    DebugSpec,
    _Progress,
    cache_key,
    check_config,
    config_fragment,
    config_mismatches,
    debug_series,
    debug_spec,
    debug_states,
    fragment_options,
    parse_config,
)
from lab.catalogue.kernels import DebFile, KernelEntry, LocalKernel
from lab.cell.spec import CellSpec
from lab.errors import CacheCorruptError, UnknownKernelError, UsageError

WANTED_Y = (
    "KASAN", "KASAN_INLINE", "UBSAN", "UBSAN_BOUNDS", "UBSAN_SHIFT", "PROVE_LOCKING",
    "DEBUG_ATOMIC_SLEEP", "DEBUG_OBJECTS_WORK", "KFENCE", "DEBUG_KMEMLEAK", "DEBUG_FS",
    "DETECT_HUNG_TASK", "SOFTLOCKUP_DETECTOR", "WQ_WATCHDOG", "IA32_EMULATION", "MODULES",
    "VIRTIO_PCI", "VIRTIO_BLK", "VIRTIO_NET", "VIRTIO_CONSOLE", "SCSI", "BLK_DEV_SR",
    "CHR_DEV_SG", "CDROM", "EXT4_FS", "ISO9660_FS", "JOLIET", "ZISOFS", "UDF_FS", "FUSE_FS",
    "BLK_DEV_LOOP", "TMPFS", "DEVTMPFS", "CGROUPS", "NAMESPACES", "INOTIFY_USER", "SIGNALFD",
    "TIMERFD", "EPOLL", "FHANDLE", "AUTOFS_FS", "UNIX", "INET", "SECCOMP", "SERIAL_8250",
    "SERIAL_8250_CONSOLE",
)  # fmt: skip


def _entry(series: str = "6.12", version: str = "6.12.58-1") -> KernelEntry:
    pool = "pool/updates/main/l/linux"
    common = DebFile(
        "linux-headers-6.12.58+deb13-common", version,
        f"{pool}/linux-headers-6.12.58+deb13-common_{version}_all.deb", SECURITY, "ab" * 32, 1,
    )  # fmt: skip
    image = DebFile(
        "linux-image-6.12.58+deb13-amd64", version,
        f"pool/updates/main/l/linux-signed-amd64/linux-image-6.12.58+deb13-amd64_{version}"
        "_amd64.deb", SECURITY, "cd" * 32, 1,
    )  # fmt: skip
    return KernelEntry(
        series, version, "6.12.58+deb13-amd64", "trixie-security", "trixie", image, (common,)
    )


# -- the fragment --------------------------------------------------------------


def test_fragment_asks_for_every_sanitizer_and_the_lean_guest_needs() -> None:
    options = fragment_options()
    for name in WANTED_Y:
        assert options[name] == "y", name
    assert options["DEFAULT_HUNG_TASK_TIMEOUT"] == "30"
    assert options["MODULE_SIG"] == "n"  # vhba.ko is loaded unsigned
    assert options["KCSAN"] == "n"  # excludes KASAN
    text = config_fragment()
    assert "CONFIG_KASAN_INLINE=y\n" in text
    assert "# CONFIG_MODULE_SIG is not set\n" in text
    assert "CONFIG_DEFAULT_HUNG_TASK_TIMEOUT=30\n" in text
    assert 'CONFIG_LOCALVERSION="-debug"\n' in text


def test_fragment_round_trips_through_the_config_parser() -> None:
    assert parse_config(config_fragment()) == fragment_options()
    names = [name for name, _ in (*GUEST_OPTIONS, *DEBUG_OPTIONS)]
    assert len(names) == len(set(names)), "an option is listed twice"


# -- the option check on a final .config ----------------------------------------


def _final_config(drop: tuple[str, ...] = (), change: dict[str, str] | None = None) -> str:
    values = {**fragment_options(), **(change or {})}
    lines = ["# Automatically generated file; DO NOT EDIT.", "CONFIG_64BIT=y"]
    for name, value in values.items():
        if name in drop:
            continue  # Kconfig dropped it: absent from .config
        lines.append(f"# CONFIG_{name} is not set" if value == "n" else f"CONFIG_{name}={value}")
    return "\n".join(lines) + "\n"


def test_a_config_with_every_option_passes(tmp_path: Path) -> None:
    check_config(_final_config(), fragment_options(), tmp_path / ".config")
    # An option wanted off may also simply be absent.
    assert config_mismatches(_final_config(drop=("DRM", "KCSAN")), fragment_options()) == []


def test_dropped_or_changed_options_are_named_with_the_fix(tmp_path: Path) -> None:
    text = _final_config(drop=("KASAN_INLINE",), change={"DEFAULT_HUNG_TASK_TIMEOUT": "120"})
    problems = config_mismatches(text, fragment_options())
    assert problems == [
        "CONFIG_KASAN_INLINE: wanted y, got unset",
        "CONFIG_DEFAULT_HUNG_TASK_TIMEOUT: wanted 30, got 120",
    ]
    with pytest.raises(DebugConfigError, match=r"KASAN_INLINE.*lab/build/debug_kernel\.py"):
        check_config(text, fragment_options(), tmp_path / ".config")
    enabled = _final_config(change={"MODULE_SIG": "y"})
    assert config_mismatches(enabled, {"MODULE_SIG": "n"}) == ["CONFIG_MODULE_SIG: wanted n, got y"]


# -- cache keys ---------------------------------------------------------------------


def test_cache_key_is_stable_and_covers_source_fragment_release_and_recipe() -> None:
    fragment = config_fragment()
    key = cache_key("6.12.58-1", fragment, "trixie")
    assert key == cache_key("6.12.58-1", config_fragment(), "trixie")
    assert len(key) == 16 and int(key, 16) >= 0
    assert key == cache_key("6.12.58-1", fragment, "trixie", RECIPE_VERSION)
    others = {
        cache_key("6.12.59-1", fragment, "trixie"),
        cache_key("6.12.58-1", fragment + "CONFIG_KCOV=y\n", "trixie"),
        cache_key("6.12.58-1", fragment, "forky"),
        cache_key("6.12.58-1", fragment, "trixie", RECIPE_VERSION + "x"),
    }
    assert key not in others and len(others) == 4


def test_known_key_does_not_drift() -> None:
    """A changed key silently orphans every cached debug kernel (an hour of build)."""
    material = json.dumps(
        {"fragment": hashlib.sha256(b"F").hexdigest(), "recipe": "1", "release": "trixie",
         "source": "6.12.58-1"}, sort_keys=True,
    )  # fmt: skip
    assert (
        cache_key("6.12.58-1", "F", "trixie", "1")
        == (hashlib.sha256(material.encode()).hexdigest()[:16])
    )


# -- names, specs, cells ---------------------------------------------------------------


def test_debug_names() -> None:
    assert debug_series("6.12-debug") == "6.12"
    assert debug_series(" 7.3-debug ") == "7.3"
    for name in ("6.12", "trixie", "6.12-debugx", "debug", "6.12.58-1"):
        assert debug_series(name) is None


def test_spec_locates_the_source_next_to_the_headers() -> None:
    spec = debug_spec(_entry())
    assert spec.name == "6.12-debug" and spec.release == "trixie"
    assert spec.source == DebFile(
        "linux-source-6.12", "6.12.58-1",
        "pool/updates/main/l/linux/linux-source-6.12_6.12.58-1_all.deb", SECURITY, None, None,
    )  # fmt: skip
    assert spec.entry_name == f"6.12-debug-{spec.key}"
    with pytest.raises(UnknownKernelError, match=r"6\.12-debug"):
        debug_spec(_entry("5.10", "5.10.262-1"))


def test_debug_cell_ids_parse_and_plain_ones_still_do() -> None:
    spec = CellSpec.parse("6.12-debug-ours-ours")
    assert (spec.kernel, spec.module, spec.responder) == ("6.12-debug", "ours", "ours")
    assert spec.cell_id == "6.12-debug-ours-ours"
    assert CellSpec.parse("6.12-debug-upstream-cdemu").module == "upstream"
    assert CellSpec.parse("7.3-ours-cdemu").kernel == "7.3"
    for bad in ("6.12-debug", "6.12-dbg-ours-ours", "debug-ours-ours", "6.12-debug-ours"):
        with pytest.raises(UsageError):
            CellSpec.parse(bad)


def test_progress_counts_compiled_files_and_reports_periodically() -> None:
    lines: list[str] = []
    progress = _Progress("6.12-debug", "build", lines.append, started=0.0, last_report=0.0)
    progress.line("  CC      kernel/fork.o\n", 1.0)
    progress.line("  CC [M]  drivers/scsi/scsi_debug.o\n", 2.0)
    progress.line("  AS      arch/x86/entry/entry_64.o\n", 3.0)
    progress.line("  LD      vmlinux.o\n", 31.0)
    assert progress.compiled == 3
    assert lines == [
        "[6.12-debug] build: 3 files compiled, 0m31s (last: arch/x86/entry/entry_64.o)"
    ]


# -- the store and catalogue resolution ----------------------------------------------------


def _fake_entry(store: DebugKernelStore, spec: DebugSpec) -> Path:
    """What a finished build leaves: a kernel tree and its build.json."""
    path = store.path(spec)
    tree = path / "tree"
    for rel, data in {
        "arch/x86/boot/bzImage": b"bz",
        "Module.symvers": b"0x0\tsym\tvmlinux\tEXPORT_SYMBOL\t\n",
        ".config": config_fragment().encode(),
        "include/config/kernel.release": b"6.12.58-debug\n",
        "modules.order": b"drivers/scsi/scsi_debug.o\n",
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    files = {
        rel: hashlib.sha256((tree / rel).read_bytes()).hexdigest()
        for rel in ("arch/x86/boot/bzImage", "Module.symvers", ".config")
    }
    record = {"kernel_release": "6.12.58-debug", "total_seconds": 3000, "files": files}
    (path / "build.json").write_text(json.dumps(record))
    return path


def test_store_verifies_entries_and_hands_out_a_labelled_local_kernel(tmp_path: Path) -> None:
    store = DebugKernelStore(tmp_path)
    spec = debug_spec(_entry())
    assert store.cached(spec) is None
    path = _fake_entry(store, spec)
    assert store.cached(spec) == path
    kernel = store.kernel(spec, path)
    assert isinstance(kernel, LocalKernel)
    assert (kernel.series, kernel.abi, kernel.release) == ("6.12-debug", "6.12.58-debug", "trixie")
    [state] = debug_states(store, [spec])
    assert state.kernel_release == "6.12.58-debug" and "built in 50 min" in state.note
    (path / "tree/arch/x86/boot/bzImage").write_bytes(b"truncated")
    with pytest.raises(CacheCorruptError, match="bzImage"):
        store.verify(path)
    assert store.cached(spec) is None
    [state] = debug_states(store, [spec])
    assert "first use" in state.note


def test_context_resolves_debug_names_from_the_catalogue(tmp_path: Path) -> None:
    ctx = trixie_context(tmp_path, debug_kernels=DebugKernelStore(tmp_path))
    catalogue = ctx.catalogue
    spec = ctx.debug_spec("6.12-debug")
    assert spec.source.version == catalogue.resolve("6.12").version
    assert spec.source.package == "linux-source-6.12"
    _fake_entry(ctx.debug_kernels, spec)  # already built: resolution must not build
    one = ctx.resolve_one("6.12-debug")
    assert isinstance(one, LocalKernel) and one.series == "6.12-debug"
    both = ctx.resolve(["6.12", "6.12-debug"])
    assert [k.series for k in both] == ["6.12", "6.12-debug"]
    assert isinstance(both[0], KernelEntry)


def test_debug_cells_are_validated_without_building(tmp_path: Path) -> None:
    from lab.run.runner import select_cells

    ctx = trixie_context(tmp_path, debug_kernels=None)  # nothing may be built
    (spec,) = select_cells(ctx, None, ["6.12-debug-ours-ours"])
    assert spec.kernel == "6.12-debug"
    with pytest.raises(UnknownKernelError, match=re.escape("unknown kernel '6.1'")):
        select_cells(ctx, None, ["6.1-debug-ours-ours"])


def test_debug_kernels_boot_with_time_and_a_watchdog_above_the_suites_own_stalls() -> None:
    from lab.build.debug_kernel import BootTuning, boot_tuning

    assert boot_tuning("6.12", "tcg") == BootTuning()
    assert boot_tuning("/home/me/linux", "kvm") == BootTuning()
    kvm, tcg = boot_tuning("6.12-debug", "kvm"), boot_tuning("6.12-debug", "tcg")
    assert kvm.kernel_args == "sysctl.kernel.hung_task_timeout_secs=120" and kvm.patience == 3.0
    assert tcg.kernel_args == "sysctl.kernel.hung_task_timeout_secs=600" and tcg.patience == 10.0


def test_a_kernel_that_always_builds_5_level_paging_boots_without_it() -> None:
    """7.3's Kconfig has no X86_5LEVEL, so its debug guest turns LA57 off at boot."""
    from lab.build.debug_kernel import DEBUG_SERIES, boot_tuning

    assert "7.3" in DEBUG_SERIES
    assert boot_tuning("7.3-debug", "tcg").kernel_args.split()[-1] == "no5lvl"
    assert "no5lvl" not in boot_tuning("6.12-debug", "tcg").kernel_args


def test_kernel_args_reach_every_boot_and_fault_args_only_their_attempt(tmp_path: Path) -> None:
    from lab.build.images import Image
    from lab.vm.accel import AccelChoice
    from lab.vm.session import Shape

    image = Image(tmp_path, "trixie", "6.12.118-debug")
    shape = Shape(AccelChoice("tcg", "test"), kernel_args="a=1")
    assert shape.spec(image, tmp_path / "d", tmp_path, None).cmdline == "a=1"
    assert shape.spec(image, tmp_path / "d", tmp_path, None, "init=/bin/false").cmdline == (
        "a=1 init=/bin/false"
    )


def test_a_debug_cells_results_pass_the_report_schema(tmp_path: Path) -> None:
    """Seen in the first real debug cell: its report was refused for the series '6.12-debug'."""
    from datetime import datetime, timezone

    from lab.report.results import Cell, Run, Status, TestResult, load_run
    from lab.report.write import write_report

    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    kernel = {"series": "6.12-debug", "version": "local:/cache/debug-kernels/6.12-debug-x/tree",
              "abi": "6.12.118-debug", "release": "trixie"}  # fmt: skip
    cell = Cell(
        "6.12-debug-ours-ours",
        kernel,
        "ours",
        "ours",
        "tcg",
        Status.PASS,
        tests=[TestResult("spc/test_inquiry_standard", "spc", Status.PASS, 67.1)],
    )
    host = {"hostname": "h", "qemu_version": "q", "python": "p", "lab_commit": "c"}
    write_report(Run("debug-1", now, now, host, [cell]), tmp_path,
                 update_latest=False)  # fmt: skip
    assert load_run(tmp_path).cells[0].kernel["series"] == "6.12-debug"
