"""The only place that starts host processes.

Every command gets a timeout, runs in its own process group (so a timeout kills the whole tree), and is
logged with its argv and output *redacted*: callers name the secret values that may appear in output (no
secret is ever put in argv: CHAP passwords go into open-iscsi's record files, cephx keys into 0600 key
files) and the runner replaces them with ``***`` before anything reaches a log line or an error message.
Long-running commands that need a watchdog (``rbd map``) are started with ``spawn`` and supervised by the
caller.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

import structlog

from attach.errors import CommandFailed, CommandTimeout

log = structlog.get_logger(__name__)

REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every non-empty secret in ``text`` with ``***`` (longest first, so prefixes do not leak)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """A finished command; ``argv``, ``stdout`` and ``stderr`` are already redacted."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Result:
        """Raise CommandFailed unless the exit code is 0."""
        if self.returncode != 0:
            raise CommandFailed(self.argv, self.returncode, self.stderr)
        return self


class Process(Protocol):
    """A spawned command under the caller's supervision."""

    argv: tuple[str, ...]
    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def output(self) -> tuple[str, str]: ...
    def close(self) -> None: ...


class _Spawned:
    """A process in its own group, with output in temp files (no pipe can fill up and block it)."""

    def __init__(
        self, argv: tuple[str, ...], secrets: tuple[str, ...], env: Mapping[str, str] | None
    ) -> None:
        self._secrets = secrets
        self.argv = tuple(redact(a, secrets) for a in argv)
        # Closed in close() once the caller is done with the process (it outlives this method).
        self._out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=self._err,
                start_new_session=True,
                env=dict(env) if env is not None else None,
            )
        except OSError as e:
            self._out.close()
            self._err.close()
            raise CommandFailed(self.argv, 127, f"cannot execute: {e.strerror}") from None
        self.pid = self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def output(self) -> tuple[str, str]:
        texts = []
        for f in (self._out, self._err):
            f.seek(0)
            texts.append(redact(f.read().decode(errors="replace"), self._secrets))
        return texts[0], texts[1]

    def close(self) -> None:
        self._out.close()
        self._err.close()


class Runner:
    """Runs host tools found on PATH with a timeout; logs redacted argv, exit code and duration."""

    def __init__(self, *, default_timeout: float, env: Mapping[str, str] | None = None) -> None:
        self._default_timeout = default_timeout
        self._env = env

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        secrets: Iterable[str] = (),
    ) -> Result:
        """Run to completion; on timeout kill the process group and raise CommandTimeout."""
        secret_tuple = tuple(s for s in secrets if s)
        shown = tuple(redact(a, secret_tuple) for a in argv)
        limit = self._default_timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=dict(self._env) if self._env is not None else None,
            )
        except OSError as e:
            log.warning("command_not_started", argv=shown, error=e.strerror)
            raise CommandFailed(shown, 127, f"cannot execute: {e.strerror}") from None
        try:
            out, err = proc.communicate(stdin.encode() if stdin is not None else None, timeout=limit)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(1.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            log.warning("command_timeout", argv=list(shown), timeout=limit)
            raise CommandTimeout(shown, limit) from None
        result = Result(
            argv=shown,
            returncode=proc.returncode,
            stdout=redact(out.decode(errors="replace"), secret_tuple),
            stderr=redact(err.decode(errors="replace"), secret_tuple),
        )
        log.info(
            "command",
            argv=list(shown),
            rc=result.returncode,
            seconds=round(time.monotonic() - started, 3),
            stderr=result.stderr.strip()[-300:] if result.returncode else "",
        )
        return result

    def spawn(self, argv: Sequence[str], *, secrets: Iterable[str] = ()) -> Process:
        """Start a command the caller supervises (poll / terminate / kill / output)."""
        proc = _Spawned(tuple(argv), tuple(s for s in secrets if s), self._env)
        log.info("command_started", argv=list(proc.argv), pid=proc.pid)
        return proc
