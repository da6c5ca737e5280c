"""What every guest channel promises, checked against the real one and the fake one.

`lab.vm.guest.Guest` (ssh into a booted guest) and :class:`LocalChannel` (the
unit tests' stand-in: ``sh -c`` on the host) must behave the same where the
lab relies on it, or a unit test that passes with the fake proves nothing.
tests/unit/test_guest_contract.py runs :func:`check_channel` on the fake,
tests/integration/test_boot.py on a real guest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.errors import GuestCommandError, GuestLostError, GuestWaitError
from lab.vm.guest import OOPS_WATCH_AFTER_S, CommandChannel, CommandResult, OopsWatch


class LocalChannel(CommandChannel):
    """A guest channel that runs commands with the host's sh: the fake side of the contract."""

    def __init__(
        self,
        alive: Callable[[], bool] | None = None,
        oopsed: Callable[[], str | None] | None = None,
    ) -> None:
        self.alive = alive
        self.oopsed = oopsed
        self.oops_watch_after = OOPS_WATCH_AFTER_S

    def sh(
        self,
        script: str,
        *,
        timeout: float = 120.0,
        check: bool = True,
        stdin: bytes | None = None,
    ) -> CommandResult:
        if self.alive is not None and not self.alive():
            raise GuestLostError("the guest's QEMU process is not running")
        proc = subprocess.Popen(
            ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        watch = OopsWatch(self.oopsed, self.oops_watch_after)
        feed: bytes | None = stdin or b""
        while True:
            try:
                out, err = proc.communicate(feed, timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                feed = None  # sent with the first call
            lost = watch.lost(script)
            if lost is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)  # sh and whatever it started
                partial, _ = proc.communicate()
                if lost is not None:
                    raise lost
                raise GuestCommandError(
                    f"guest command timed out after {timeout:.0f} s: {script}\n"
                    f"partial stdout: {partial.decode(errors='replace')}"
                )
        result = CommandResult(
            script, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )
        return result.check() if check else result

    def write_text(self, remote: str, text: str) -> None:
        Path(remote).write_text(text)


def check_channel(
    channel: object,
    scratch: str,
    kill: Callable[[], None] | None = None,
    oops: Callable[[], None] | None = None,
) -> None:
    """The contract.  ``scratch``: a writable directory on the channel's side.

    ``kill``: end the other side for good (QEMU killed); the channel must then
    say GuestLostError at once, not after a reconnect timeout.  ``oops``: make
    the other side's kernel report an oops; a long command must then be given
    up on with GuestLostError, not waited out.
    """
    run = channel.run  # type: ignore[attr-defined]
    sh = channel.sh  # type: ignore[attr-defined]
    # Output, both streams and the exit code come back separately and whole.
    res = sh("printf 'out\\n'; printf 'err\\n' >&2; exit 3", check=False)
    assert (res.rc, res.stdout, res.stderr) == (3, "out\n", "err\n")
    big = sh("head -c 300000 /dev/zero | tr '\\0' x")
    assert big.rc == 0 and big.stdout == "x" * 300000, "output must not be cut short"
    # An argv reaches the program word for word: nothing in it is shell syntax.
    words = ["a b", "$(echo no)", "it's", '"q"', "*", "; exit 9", "", "línea"]
    assert run(["printf", "%s|", *words]).stdout == "|".join(words) + "|"
    with pytest.raises(TypeError):
        run("echo shell text is not an argv")
    # stdin reaches the command.
    assert run(["cat"], stdin=b"fed through stdin").stdout == "fed through stdin"
    # Exit codes are checked by default; the error carries the command, the exit
    # code and the output.
    with pytest.raises(GuestCommandError) as failed:
        sh("echo some-output; echo some-error >&2; exit 7")
    text = str(failed.value)
    assert "rc 7" in text and "exit 7" in text and "some-output" in text and "some-error" in text
    assert not isinstance(failed.value, GuestLostError), "a failing command is no lost guest"
    with pytest.raises(GuestCommandError, match="rc 1"):
        run(["false"])
    assert run(["false"], check=False).rc == 1
    # A command that outlives its timeout is stopped, and the channel still works after.
    started = time.monotonic()
    with pytest.raises(GuestCommandError, match="timed out after 2 s") as slow:
        sh("echo begun; sleep 30", timeout=2)
    assert time.monotonic() - started < 20
    assert not isinstance(slow.value, GuestLostError)
    assert run(["echo", "again"]).stdout == "again\n"
    # Files written through the channel are there, byte for byte.
    channel.write_text(f"{scratch}/contract.txt", "línea\n")  # type: ignore[attr-defined]
    assert run(["cat", f"{scratch}/contract.txt"]).stdout == "línea\n"
    # wait_for polls from the host until the command succeeds, or says it never did.
    flag = f"{scratch}/flag"
    sh(f"(sleep 1; touch {flag}) >/dev/null 2>&1 &")
    assert channel.wait_for(["test", "-e", flag], timeout=20).rc == 0  # type: ignore[attr-defined]
    with pytest.raises(GuestWaitError, match="still failing after 1 s"):
        channel.wait_for(["test", "-e", f"{scratch}/never"], timeout=1)  # type: ignore[attr-defined]
    sh(f"(sleep 1; rm {flag}) >/dev/null 2>&1 &")
    gone = channel.wait_for(["test", "-e", flag], timeout=20, until_fails=True)  # type: ignore[attr-defined]
    assert gone.rc == 1
    with pytest.raises(GuestWaitError, match="still succeeding after 1 s"):
        channel.wait_for(["true"], timeout=1, until_fails=True)  # type: ignore[attr-defined]
    if oops is not None:
        channel.oops_watch_after = 1.0  # type: ignore[attr-defined]
        assert run(["sleep", "2"]).rc == 0, "no oops yet: a long command runs to its end"
        oops()
        started = time.monotonic()
        with pytest.raises(GuestLostError, match="oopsed") as died:
            sh("sleep 60", timeout=120)
        assert time.monotonic() - started < 20, "a command outlasting an oops is not waited out"
        assert "sleep 60" in str(died.value)
        assert run(["echo", "short"]).stdout == "short\n", "short commands are not watched"
    if kill is not None:
        kill()
        started = time.monotonic()
        with pytest.raises(GuestLostError):
            run(["true"])
        assert time.monotonic() - started < 10, "a dead guest must be told at once"
