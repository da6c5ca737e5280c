"""CLI behaviour, the serve lifecycle (ready file, SIGTERM) and the zipapp build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.cell.drives import unpack_commands
from vhba_responder import zipapp
from vhba_responder.cli import main
from vhba_responder.control import ControlServer
from vhba_responder.device import Device

REPO = Path(__file__).resolve().parents[3]


def test_missing_control_node_is_one_clear_line(tmp_path, capsys):
    rc = main(
        [
            "serve",
            "--ctl",
            str(tmp_path / "vhba_ctl"),
            "--device",
            "-",
            "--control",
            str(tmp_path / "c.sock"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "does not exist" in err and "modprobe vhba" in err


def test_unopenable_control_node_mentions_permissions(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can open anything")
    node = tmp_path / "vhba_ctl"
    node.write_text("")
    node.chmod(0)
    assert (
        main(["serve", "--ctl", str(node), "--device", "-", "--control", str(tmp_path / "c.sock")])
        == 2
    )
    assert "permission" in capsys.readouterr().err


def test_bad_fault_spec(tmp_path, capsys):
    rc = main(
        [
            "serve",
            "--ctl",
            "/dev/null",
            "--device",
            "-",
            "--control",
            str(tmp_path / "c.sock"),
            "--fault",
            "nope",
        ]
    )
    assert rc == 2 and "unknown fault kind" in capsys.readouterr().err


def test_missing_image(tmp_path, capsys):
    rc = main(
        [
            "serve",
            "--ctl",
            "/dev/null",
            "--device",
            str(tmp_path / "x.iso"),
            "--control",
            str(tmp_path / "c.sock"),
        ]
    )
    assert rc == 2 and "cannot open image" in capsys.readouterr().err


def test_ctl_status_and_error_exit(tmp_path, capsys):
    sock = tmp_path / "c.sock"
    srv = ControlServer(sock, [Device()]).start()
    try:
        assert main(["ctl", "--control", str(sock), "status"]) == 0
        assert json.loads(capsys.readouterr().out)["devices"][0]["index"] == 0
        assert main(["ctl", "--control", str(sock), "eject", "5"]) == 1
        assert "no device 5" in capsys.readouterr().out
    finally:
        srv.close()


def test_ctl_without_server(tmp_path, capsys):
    assert main(["ctl", "--control", str(tmp_path / "none.sock"), "status"]) == 2
    assert "cannot talk to" in capsys.readouterr().err


def _wait_ready(proc: subprocess.Popen, ready: Path) -> dict:
    """The ready document of a ``serve`` just started (10 s at most)."""
    for _ in range(200):
        if ready.exists():
            return json.loads(ready.read_text())
        assert proc.poll() is None, "serve exited early"
        time.sleep(0.05)
    raise AssertionError("serve wrote no ready file in 10 s")


def _serve_lifecycle(
    cmd_prefix: list[str], tmp_path: Path, iso_path: Path, env: dict[str, str] | None = None
) -> None:
    """Run serve against a FIFO standing in for /dev/vhba_ctl (ioctls fail, which
    the server tolerates), wait for the ready file, drive ctl, then SIGTERM."""
    fifo = tmp_path / "fake_ctl"
    os.mkfifo(fifo)
    sock, ready, log = tmp_path / "c.sock", tmp_path / "ready.json", tmp_path / "r.log"
    proc = subprocess.Popen(
        [
            *cmd_prefix,
            "serve",
            "--ctl",
            str(fifo),
            "--device",
            str(iso_path),
            "--device",
            "-",
            "--control",
            str(sock),
            "--ready-file",
            str(ready),
            "--log",
            str(log),
            "--trace",
            str(tmp_path / "t.jsonl"),
            "--fault",
            "delay:ms=1,dev=1",
        ],
        cwd=tmp_path,
        env=env,
    )
    try:
        doc = _wait_ready(proc, ready)
        assert [d["index"] for d in doc["devices"]] == [0, 1]
        assert doc["devices"][0]["medium"] == str(iso_path)
        assert doc["devices"][1]["medium"] is None
        assert doc["pid"] == proc.pid and doc["control"] == str(sock)
        assert set(doc["devices"][0]) >= {"devnum", "hctl", "host", "channel", "target", "lun"}
        out = subprocess.run(
            [*cmd_prefix, "ctl", "--control", str(sock), "status"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        status = json.loads(out.stdout)
        assert status["devices"][1]["faults"][0]["spec"] == "delay:ms=1,dev=1"
        assert status["devices"][0]["faults"] == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not ready.exists() and not sock.exists()
        assert "ready: 2 drive(s)" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_lifecycle_module(tmp_path, iso):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    _serve_lifecycle([sys.executable, "-m", "vhba_responder"], tmp_path, iso.path, env)


def test_zipapp_build_and_run(tmp_path, iso):
    pyz = zipapp.build(tmp_path / "out" / "vhba-responder.pyz")
    assert pyz.is_file() and pyz.read_bytes().startswith(b"#!/usr/bin/env python3")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, str(pyz), "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0 and "vhba-responder" in r.stdout
    r = subprocess.run(
        [sys.executable, str(pyz), "ctl", "--control", "/nonexistent", "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 2  # the CLI's exit code survives the zipapp entry point
    _serve_lifecycle([sys.executable, str(pyz)], tmp_path, iso.path, env)


def test_the_unpacked_zipapp_runs_without_compiling(tmp_path, iso):
    """As the lab ships it (lab/cell/drives.py): every module's bytecode is ready."""
    pyz = zipapp.build(tmp_path / "vhba-responder.pyz")
    tree = tmp_path / "tree"
    for argv in unpack_commands(str(pyz), str(tree), python=sys.executable):
        subprocess.run(argv, check=True)
    compiled = sorted(tree.rglob("*.pyc"))
    sources = list(tree.rglob("*.py"))
    assert len(compiled) == len(sources) > 10
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _serve_lifecycle([sys.executable, str(tree)], tmp_path, iso.path, env)
    assert sorted(tree.rglob("*.pyc")) == compiled  # nothing compiled at run time


def test_zipapp_module_entry(tmp_path):
    out = tmp_path / "r.pyz"
    r = subprocess.run(
        [sys.executable, "-m", "vhba_responder.zipapp", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0 and out.is_file()


def test_die_fault_exits_abruptly(tmp_path):
    """A request arriving on the (FIFO stand-in) control node triggers ``die``."""
    from vhba_responder.protocol import Request
    from vhba_responder.server import DIE_EXIT_CODE

    fifo = tmp_path / "fake_ctl"
    os.mkfifo(fifo)
    sock, ready = tmp_path / "c.sock", tmp_path / "ready.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vhba_responder",
            "serve",
            "--ctl",
            str(fifo),
            "--device",
            "-",
            "--control",
            str(sock),
            "--ready-file",
            str(ready),
            "--fault",
            "die:op=0",
            "--log",
            str(tmp_path / "log"),
        ],
        env=env,
    )
    try:
        for _ in range(200):
            if ready.exists():
                break
            time.sleep(0.05)
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, Request(1, 0, bytes(6), 0).pack())
        os.close(fd)
        assert proc.wait(10) == DIE_EXIT_CODE
        assert ready.exists()  # no cleanup: it really died
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_zero_threads_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--ctl", str(tmp_path / "vhba_ctl"), "--device", "-", "--threads", "0"])
    assert exc.value.code == 2
    assert "expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_default_control_socket_follows_systemd_then_the_users_runtime_dir(tmp_path):
    from vhba_responder.cli import SYSTEM_RUNTIME, default_control

    service = {"RUNTIME_DIRECTORY": "/run/vhba-responder", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_control(service, 998, serving=True) == Path("/run/vhba-responder/control")
    user = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert default_control(user, 1000, serving=True) == tmp_path / "vhba-responder" / "control"
    assert default_control(user, 0, serving=True) == SYSTEM_RUNTIME / "control"
    assert default_control({}, 1000, serving=True) == SYSTEM_RUNTIME / "control"
    # ctl finds a server where one listens: the user's own first, else the system's.
    assert default_control(user, 1000, serving=False) in (
        tmp_path / "vhba-responder" / "control", SYSTEM_RUNTIME / "control",
    )  # fmt: skip
    (tmp_path / "vhba-responder").mkdir()
    (tmp_path / "vhba-responder" / "control").write_text("")
    assert default_control(user, 1000, serving=False) == tmp_path / "vhba-responder" / "control"


def test_serve_and_ctl_without_control_meet_in_the_runtime_dir(tmp_path, iso):
    # As under systemd's RuntimeDirectory= (never the host's own /run).
    runtime = tmp_path / "run" / "vhba-responder"
    env = dict(os.environ, PYTHONPATH=str(REPO), RUNTIME_DIRECTORY=str(runtime))
    fifo = tmp_path / "fake_ctl"
    os.mkfifo(fifo)
    ready = tmp_path / "ready.json"
    cmd = [sys.executable, "-m", "vhba_responder"]
    proc = subprocess.Popen([*cmd, "serve", "--ctl", str(fifo), "--device", str(iso.path),
                             "--ready-file", str(ready)], cwd=tmp_path, env=env)  # fmt: skip
    try:
        assert Path(_wait_ready(proc, ready)["control"]) == runtime / "control"
        out = subprocess.run([*cmd, "ctl", "status"], capture_output=True, text=True,
                             env=env, timeout=60, check=True)  # fmt: skip
        assert json.loads(out.stdout)["devices"][0]["medium"] == str(iso.path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctl_looks_past_a_runtime_dir_it_may_not_read(tmp_path, monkeypatch):
    """runuser keeps root's XDG_RUNTIME_DIR (/run/user/0): seen in a guest as PermissionError."""
    from vhba_responder import cli

    forbidden = tmp_path / "root-runtime"
    real_exists = Path.exists

    def exists(path: Path, *args, **kwargs) -> bool:
        if forbidden in path.parents:
            raise PermissionError(13, "Permission denied", str(path))
        return real_exists(path, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    monkeypatch.setattr(cli, "SYSTEM_RUNTIME", tmp_path / "system")
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "control").write_text("")
    env = {"XDG_RUNTIME_DIR": str(forbidden)}
    assert cli.default_control(env, 1000, serving=False) == tmp_path / "system" / "control"
