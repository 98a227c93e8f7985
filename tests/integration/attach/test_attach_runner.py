"""The runner against real processes: timeouts kill the process group, secrets never reach logs."""

from __future__ import annotations

import sys
import time

import pytest
from structlog.testing import capture_logs

from attach.errors import CommandFailed, CommandTimeout
from attach.runner import Runner


def test_timeout_kills_the_process_group() -> None:
    """A command exceeding its timeout is killed (with its children) and raises CommandTimeout."""
    runner = Runner(default_timeout=5)
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        runner.run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.3)
    assert time.monotonic() - started < 3


def test_missing_tool_is_command_failed_127() -> None:
    """A tool that is not on PATH is reported as exit 127, not as an OSError."""
    with pytest.raises(CommandFailed) as err:
        Runner(default_timeout=5).run(["no-such-tool-anywhere"])
    assert 127 == err.value.returncode


def test_secrets_are_redacted_in_result_and_logs() -> None:
    """A secret in argv, stdout and stderr shows up as *** in the result and in log events."""
    secret = "s3cr3t-value"
    script = "import sys; print(sys.argv[1]); print(sys.argv[1], file=sys.stderr); sys.exit(3)"
    with capture_logs() as logs:
        result = Runner(default_timeout=5).run([sys.executable, "-c", script, secret], secrets=[secret])
    assert (3, "***\n", "***\n") == (result.returncode, result.stdout, result.stderr)
    assert "***" == result.argv[-1]
    assert [] == [e for e in logs if secret in repr(e)]


def test_stdin_reaches_the_command() -> None:
    """stdin is passed (the way to hand a secret to a tool that reads it)."""
    script = "import sys; print(sys.stdin.read().upper())"
    result = Runner(default_timeout=5).run([sys.executable, "-c", script], stdin="abc")
    assert "ABC\n" == result.stdout


def test_spawned_process_terminate_and_output() -> None:
    """spawn → poll None while running; terminate ends it; output is readable afterwards."""
    proc = Runner(default_timeout=5).spawn(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"]
    )
    try:
        assert proc.poll() is None
        time.sleep(0.3)
        proc.terminate()
        assert proc.wait(5) is not None
        assert "up\n" == proc.output()[0]
    finally:
        proc.kill()
        proc.wait(5)
        proc.close()
