"""One run's configuration: written by ``vhba-lab run``, read by every suite worker.

Before this file existed each option travelled as its own pytest flag and
some were re-derived in the workers (the security mirror and ``--refresh``
never reached them at all).  Now the parent resolves everything once
(the accelerator included, so no worker probes KVM again), writes
``<run-dir>/config.json``, and the conformance plugin reads that file back
through :meth:`RunConfig.read`, which checks it field by field: a stale or
hand-edited file is a one-line error, never a half-configured run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from lab.cell.health import LEAK_SCAN_SCOPES
from lab.cell.spec import MODULES, CellSpec
from lab.errors import UsageError

SCHEMA_VERSION = 1
FILE_NAME = "config.json"


class RunConfigError(UsageError):
    """A run configuration file that does not match this lab's schema."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a conformance worker does, and nothing else."""

    cells: tuple[str, ...]
    accel: str = "auto"  # "kvm"/"tcg" once the parent has chosen
    mirror: str | None = None
    security_mirror: str | None = None
    refresh: bool = False
    quick: bool = False
    keyword: str | None = None
    responder_faults: tuple[str, ...] = ()
    module_fault: str | None = None  # lab.build.module.MODULE_FAULTS
    boot_fault: str | None = None  # lab.cell.env.BOOT_FAULTS
    module_path: str | None = None  # a module tree or tarball (--module, lab.build.module_source)
    module_name: str | None = None  # its name in cell ids
    module_known_as: str | None = None  # whose known failures it shares (--module-known-as)
    kmemleak_scans: str = "group"  # lab.cell.health.LEAK_SCAN_SCOPES

    def specs(self) -> list[CellSpec]:
        specs = [CellSpec.parse(cell) for cell in self.cells]
        for spec in specs:
            if spec.module not in MODULES and spec.module != self.module_name:
                raise UsageError(
                    f"unknown module {spec.module!r} in cell {spec.cell_id}: choose one of "
                    f"{', '.join(MODULES)}, or pass the module's tree with --module PATH"
                )
        return specs

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"schema_version": SCHEMA_VERSION}
        for name, value in asdict(self).items():
            data[name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_json(cls, data: object, where: str = "run configuration") -> RunConfig:
        """Parse and check ``data``; any mismatch raises RunConfigError naming the field."""

        def bad(what: str) -> RunConfigError:
            return RunConfigError(
                f"{where}: {what}; it was written by another version of the lab: "
                "start the run again with 'vhba-lab run'"
            )

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise bad(f"schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known) - {"schema_version"})
        if unknown:
            raise bad(f"unknown field(s) {', '.join(unknown)}")
        values: dict[str, object] = {}
        for name, spec in known.items():
            if name not in data:
                if name == "cells":
                    raise bad("no 'cells'")
                continue
            value = data[name]
            kind = str(spec.type)
            if kind.startswith("tuple"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise bad(f"'{name}' must be a list of strings")
                values[name] = tuple(value)
            elif kind == "bool":
                if not isinstance(value, bool):
                    raise bad(f"'{name}' must be true or false")
                values[name] = value
            elif not (isinstance(value, str) or (value is None and "None" in kind)):
                raise bad(f"'{name}' must be a string")
            else:
                values[name] = value
        config = cls(**values)  # type: ignore[arg-type]
        if config.kmemleak_scans not in LEAK_SCAN_SCOPES:
            raise bad(
                f"'kmemleak_scans' is {config.kmemleak_scans!r}, not one of "
                f"{', '.join(LEAK_SCAN_SCOPES)}"
            )
        try:
            config.specs()
        except UsageError as exc:
            raise bad(str(exc)) from exc
        return config

    def write(self, run_dir: Path) -> Path:
        path = run_dir / FILE_NAME
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> RunConfig:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunConfigError(
                f"cannot read the run configuration {path}: {exc}; start the run again "
                "with 'vhba-lab run'"
            ) from exc
        return cls.from_json(data, str(path))
