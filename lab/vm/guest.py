"""The SSH channel into a booted guest (paramiko).

Host keys are generated per image at build time and pinned here, so the lab
never trusts an unknown key and never pays for key generation at boot.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import logging
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Union

import paramiko

from lab.errors import GuestCommandError, GuestLostError, GuestWaitError

log = logging.getLogger(__name__)


#: One word of a guest command line.
Arg = Union[str, int, PurePath]


def command_text(argv: Sequence[Arg]) -> str:
    """``argv`` as bash text: the one place the lab quotes a guest command."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("a guest command is an argv list; shell text goes to Guest.sh()")
    return shlex.join(str(arg) for arg in argv)


def poll(
    attempt: Callable[[], CommandResult], timeout: float, interval: float, fails: bool = False
) -> CommandResult:
    """Call ``attempt`` until it succeeds (``fails``: until it fails) or ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if (result.rc == 0) != fails:
            return result
        if time.monotonic() >= deadline:
            still = "succeeding" if fails else "failing"
            raise GuestWaitError(
                f"guest command still {still} after {timeout:.0f} s (rc {result.rc}): "
                f"{result.cmd}\nstdout: {result.stdout.strip()[-1000:]}\n"
                f"stderr: {result.stderr.strip()[-1000:]}"
            )
        time.sleep(interval)


@dataclass(frozen=True)
class CommandResult:
    cmd: str
    rc: int
    stdout: str
    stderr: str

    def check(self) -> CommandResult:
        if self.rc != 0:
            raise GuestCommandError(
                f"guest command failed (rc {self.rc}): {self.cmd}\n"
                f"stdout: {self.stdout.strip()[-2000:]}\nstderr: {self.stderr.strip()[-2000:]}"
            )
        return self


@dataclass(frozen=True)
class SshIdentity:
    """How to reach a guest: loopback port, client key, pinned host key."""

    port: int
    client_key: Path
    host_pubkey: Path
    user: str = "root"

    def ssh_command(self, known_hosts: Path) -> list[str]:
        """An OpenSSH command line equivalent to this channel (for ``--print``)."""
        return [
            "ssh", "-p", str(self.port), "-i", str(self.client_key),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "LogLevel=ERROR", f"{self.user}@127.0.0.1",
        ]  # fmt: skip

    def write_known_hosts(self, path: Path) -> Path:
        kind, blob = self.host_pubkey.read_text().split()[:2]
        path.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        return path


#: What paramiko and the socket layer raise when the connection itself fails.
#: (Not plain OSError: sftp raises that for a missing file, which is no lost guest.)
_CHANNEL_ERRORS = (paramiko.SSHException, EOFError, ConnectionError, socket.timeout)


class CommandChannel:
    """``run(argv)`` and ``wait_for(argv)`` for a channel that implements ``sh(script)``.

    :class:`Guest` is one; the unit tests' stand-ins are others, so argv
    quoting, exit-code checks and polling behave the same in both.
    """

    patience: float = 1.0  # multiplies timeouts (a sanitizer kernel under TCG is slow)

    def sh(
        self,
        script: str,
        *,
        timeout: float = 120.0,
        check: bool = True,
        stdin: bytes | None = None,
    ) -> CommandResult:
        raise NotImplementedError

    def run(
        self,
        argv: Sequence[Arg],
        *,
        timeout: float = 120.0,
        check: bool = True,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run one program in the guest: ``argv`` is quoted by :func:`command_text`.

        ``check`` (the default) raises :class:`GuestCommandError`, carrying the
        command, its exit code and its output, when the exit code is not 0;
        callers that act on the exit code pass ``check=False``.
        """
        return self.sh(command_text(argv), timeout=timeout, check=check, stdin=stdin)

    def wait_for(
        self,
        argv: Sequence[Arg],
        *,
        timeout: float,
        interval: float = 0.1,
        until_fails: bool = False,
    ) -> CommandResult:
        """Run ``argv`` until it exits 0 (``until_fails``: until it does not, e.g. a
        ``pgrep`` for a process that must end); the polling loop runs here, on the host.

        Each try is one round trip on the long-lived shell.  Raises
        :class:`GuestWaitError` with the last try's output after
        ``timeout`` seconds (times ``patience``).
        """
        attempt = functools.partial(self.run, argv, check=False)
        return poll(attempt, timeout * self.patience, interval, until_fails)

    def settle(self, seconds: float = 20.0) -> bool:
        """Wait until udev has handled the events queued so far; False if it is still busy.

        Udev's probes of a new drive or disc (cdrom_id, blkid) hold it open, and
        Linux locks a CD-ROM's door while it is open: a disc change tried before
        they end is refused with MEDIUM REMOVAL PREVENTED.  ``seconds`` times
        ``patience``: a sanitizer kernel's udev takes longer than a plain one's.
        """
        limit = max(1, round(seconds * self.patience))
        argv = ["udevadm", "settle", "-t", str(limit)]
        return self.run(argv, timeout=limit + 60, check=False).rc == 0


# How long a command runs before the serial log is looked at for an oops, and
# how often then: commands that end sooner never pay for the look.
OOPS_WATCH_AFTER_S = 30.0
OOPS_WATCH_EVERY_S = 5.0


class OopsWatch:
    """Whether the guest kernel oopsed while one long command ran (see :class:`Guest`)."""

    def __init__(self, oopsed: Callable[[], str | None] | None, after: float) -> None:
        self.oopsed = oopsed
        self.next_look = time.monotonic() + after

    def lost(self, cmd: str) -> GuestLostError | None:
        """The error to give up ``cmd`` with, once the kernel has oopsed; else None."""
        if self.oopsed is None or time.monotonic() < self.next_look:
            return None
        self.next_look = time.monotonic() + OOPS_WATCH_EVERY_S
        line = self.oopsed()
        if line is None:
            return None
        return GuestLostError(f"the guest kernel oopsed while a command ran ({line}): {cmd[:200]}")


class Guest(CommandChannel):
    """Run commands in and move files to/from a guest over SSH.

    ``alive`` (the QEMU process's liveness) lets a dead guest be told at once:
    any connection-level failure raises :class:`GuestLostError` without the
    15 s reconnect attempt when QEMU is gone.  A command's own failure or
    timeout stays a :class:`GuestCommandError`.

    ``patience`` multiplies every command's timeout: a sanitizer kernel under
    TCG runs the same command many times slower, and a timeout tuned for
    Debian's kernel would turn that into a false failure.

    ``oopsed`` names a kernel oops the guest printed since it came up (None:
    none).  A command still running after ``oops_watch_after`` seconds is
    given up on with :class:`GuestLostError` once the kernel has oopsed: the
    task it waits for may be the one that died, holding locks for good (seen:
    a 6.16 guest whose UDF write oopsed left its command waiting out 30 min).
    """

    def __init__(
        self,
        identity: SshIdentity,
        alive: Callable[[], bool] | None = None,
        patience: float = 1.0,
        oopsed: Callable[[], str | None] | None = None,
    ) -> None:
        self.identity = identity
        self.alive = alive
        self.patience = patience
        self.oopsed = oopsed
        self.oops_watch_after = OOPS_WATCH_AFTER_S
        self._client: paramiko.SSHClient | None = None
        self._shell: paramiko.Channel | None = None  # the long-lived bash (see run())
        self._shell_lock = threading.Lock()

    def _new_client(self, timeout: float) -> paramiko.SSHClient:
        ident = self.identity
        client = paramiko.SSHClient()
        kind, blob = ident.host_pubkey.read_text().split()[:2]
        host_key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
        client.get_host_keys().add(f"[127.0.0.1]:{ident.port}", kind, host_key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            "127.0.0.1",
            port=ident.port,
            username=ident.user,
            key_filename=str(ident.client_key),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return client

    def try_connect(self, timeout: float = 5.0) -> bool:
        """One connection attempt; True once sshd answers and accepts our key."""
        try:
            self._client = self._new_client(timeout)
            return True
        except (OSError, paramiko.SSHException, EOFError, socket.timeout) as exc:
            log.debug("ssh not ready: %s", exc)
            return False

    def _qemu_gone(self) -> bool:
        return self.alive is not None and not self.alive()

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            if self._qemu_gone():
                raise GuestLostError("the guest's QEMU process is not running")
            if not self.try_connect(timeout=15 * self.patience):
                raise GuestLostError(
                    f"cannot reach the guest over ssh on port {self.identity.port}"
                )
        assert self._client is not None
        return self._client

    @contextlib.contextmanager
    def _channel(self, what: str) -> Iterator[None]:
        """Turn a connection-level failure during ``what`` into GuestLostError."""
        try:
            yield
        except GuestCommandError:
            raise
        except _CHANNEL_ERRORS as exc:
            self.close()
            gone = " (QEMU is not running)" if self._qemu_gone() else ""
            raise GuestLostError(f"lost the ssh connection{gone} during {what}: {exc!r}") from exc

    def close(self) -> None:
        self._drop_shell()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _transport(self) -> paramiko.Transport:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            self.close()
            transport = self.client.get_transport()
        assert transport is not None
        return transport

    def sh(
        self,
        script: str,
        *,
        timeout: float = 120.0,
        check: bool = True,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run shell text with bash in the guest: for pipelines and redirections.

        A plain command goes through :meth:`run` instead, so that only
        :func:`command_text` quotes.  The guest gives up on it after ``timeout``
        seconds (times ``patience``).

        Scripts without ``stdin`` go to one long-lived bash (:meth:`_run_in_shell`):
        under TCG an ssh session per command costs 150-250 ms, a command in a
        running shell only the fork of its subshell.  Scripts with ``stdin``
        (and any issued while the shell is busy in another thread) get their own
        ssh session.  Either way the script runs in a fresh subshell with stdin
        from /dev/null, so ``cd``, ``export`` or ``exit`` stay inside it.
        """
        timeout *= self.patience
        with self._channel(f"command {script[:200]!r}"):
            if stdin is None and self._shell_lock.acquire(blocking=False):
                try:
                    rc, out, err = self._run_in_shell(script, timeout)
                finally:
                    self._shell_lock.release()
            else:
                rc, out, err = self.run_session(script, timeout, stdin)
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        result = CommandResult(script, rc, stdout, stderr)
        return result.check() if check else result

    def _timed_out(self, cmd: str, timeout: float, out: bytes) -> GuestCommandError:
        return GuestCommandError(
            f"guest command timed out after {timeout:.0f} s: {cmd}\n"
            f"partial stdout: {out.decode(errors='replace')[-1000:]}"
        )

    def run_session(
        self, cmd: str, timeout: float, stdin: bytes | None
    ) -> tuple[int, bytes, bytes]:
        """One ssh session for ``cmd``: done at its exit status and EOF on both streams.

        Public because bench.lab times it as the baseline of the shell channel.
        """
        transport = self._transport()
        chan = transport.open_session(timeout=30 * self.patience)
        chan.settimeout(timeout)
        chan.exec_command(cmd)
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()
        out, err = io.BytesIO(), io.BytesIO()
        deadline = time.monotonic() + timeout
        watch = OopsWatch(self.oopsed, self.oops_watch_after * self.patience)
        while True:
            if chan.recv_ready():
                out.write(chan.recv(65536))
            if chan.recv_stderr_ready():
                err.write(chan.recv_stderr(65536))
            # Done only at EOF on both streams: the exit status can arrive before the
            # last output bytes.
            if (
                chan.exit_status_ready()
                and chan.eof_received
                and not chan.recv_ready()
                and not chan.recv_stderr_ready()
            ):
                break
            if not chan.exit_status_ready() and (chan.closed or not transport.is_active()):
                # The connection died under the command (QEMU killed, guest reset).
                raise EOFError("the ssh transport closed before the command ended")
            if time.monotonic() > deadline:
                chan.close()
                raise self._timed_out(cmd, timeout, out.getvalue())
            if (lost := watch.lost(cmd)) is not None:
                chan.close()
                raise lost
            time.sleep(0.01)
        rc = chan.recv_exit_status()
        chan.close()
        return rc, out.getvalue(), err.getvalue()

    def _drop_shell(self) -> None:
        if self._shell is not None:
            with contextlib.suppress(Exception):
                self._shell.close()
            self._shell = None

    def _run_in_shell(self, cmd: str, timeout: float) -> tuple[int, bytes, bytes]:
        """Run ``cmd`` in the long-lived bash; its end is a random tag on both streams.

        The command text reaches bash through a quoted here-document (no
        quoting of its own is needed) and runs in ``( eval ... )``.  The tag
        line starts with a newline, so it is found even after output without
        one; that one newline is not part of the command's output.
        """
        transport = self._transport()
        if self._shell is None or self._shell.closed:
            self._shell = transport.open_session(timeout=30 * self.patience)
            self._shell.exec_command("exec bash --noprofile --norc")
        shell = self._shell
        tag = f"VHBA_LAB_END_{secrets.token_hex(8)}"
        shell.sendall(
            (
                f"IFS= read -r -d '' VHBA_LAB_CMD <<'{tag}'\n{cmd}\n{tag}\n"
                f'( eval "$VHBA_LAB_CMD" ) </dev/null; VHBA_LAB_RC=$?\n'
                f"printf '\\n{tag} %d\\n' \"$VHBA_LAB_RC\"; printf '\\n{tag}\\n' >&2\n"
            ).encode()
        )
        out_mark, err_mark = f"\n{tag} ".encode(), f"\n{tag}\n".encode()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        watch = OopsWatch(self.oopsed, self.oops_watch_after * self.patience)
        while True:
            busy = False
            if shell.recv_ready():
                out += shell.recv(65536)
                busy = True
            if shell.recv_stderr_ready():
                err += shell.recv_stderr(65536)
                busy = True
            at = out.find(out_mark)
            end = out.find(b"\n", at + len(out_mark)) if at >= 0 else -1
            err_at = err.find(err_mark)
            if end >= 0 and err_at >= 0:
                return int(out[at + len(out_mark) : end]), bytes(out[:at]), bytes(err[:err_at])
            if shell.closed or shell.exit_status_ready() or not transport.is_active():
                self._drop_shell()
                if not transport.is_active() or self._qemu_gone():
                    raise EOFError("the ssh transport closed before the command ended")
                raise GuestCommandError(f"the lab's shell in the guest ended during: {cmd}")
            if time.monotonic() > deadline:
                self._drop_shell()  # the command may still run; the next one gets a new shell
                raise self._timed_out(cmd, timeout, bytes(out))
            if not busy:
                if (lost := watch.lost(cmd)) is not None:
                    self._drop_shell()  # its command may never end
                    raise lost
                time.sleep(0.002)

    def upload(self, local: Path, remote: str, mode: int | None = None) -> None:
        with self._channel(f"upload of {local.name}"), self.client.open_sftp() as sftp:
            sftp.put(str(local), remote)
            if mode is not None:
                sftp.chmod(remote, mode)

    def download(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with self._channel(f"download of {remote}"), self.client.open_sftp() as sftp:
            sftp.get(remote, str(local))

    def write_text(self, remote: str, text: str) -> None:
        self.sh(f"cat > {command_text([remote])}", stdin=text.encode())
