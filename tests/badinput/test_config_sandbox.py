"""Hostile options for ``cinder-provisioner sandbox``: refused before anything starts, one line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.cli.main import main


def sandbox(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(["sandbox", *argv])
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _workdir(tmp: Path, kind: str) -> str:
    path = tmp / "work"
    if kind == "regular-file":
        path.write_text("x", encoding="utf-8")
    elif kind == "dangling-symlink":
        path.symlink_to(tmp / "gone")
    elif kind == "under-a-file":
        path.write_text("x", encoding="utf-8")
        return str(path / "sub")
    return str(path)


@pytest.mark.parametrize("kind", ["missing", "regular-file", "dangling-symlink", "under-a-file"])
def test_unusable_workdir(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """--workdir that does not exist or is not a directory: exit 2, one line naming --workdir, no output."""
    code, out, err = sandbox(["--workdir", _workdir(tmp_path, kind)], capsys)
    assert (2, "", 1, True) == (code, out, len(err.splitlines()), err.startswith("error: --workdir: "))


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--pvcs", "0"], "error: --pvcs: "),
        (["--pvcs", "-3"], "error: --pvcs: "),
        (["--pvcs", "1000000"], "error: --pvcs: "),
        (["--pvcs", "many"], "cinder-provisioner sandbox: error: argument --pvcs"),
        (["--timeout", "nan"], "error: --timeout: "),
        (["--timeout", "inf"], "error: --timeout: "),
        (["--timeout", "-1"], "error: --timeout: "),
        (["--timeout", "0"], "error: --timeout: "),
        (["--cinder", "openstack"], "cinder-provisioner sandbox: error: argument --cinder"),
        (["--surprise"], "cinder-provisioner: error: unrecognized arguments: --surprise"),
    ],
    ids=[
        "pvcs-zero",
        "pvcs-negative",
        "pvcs-huge",
        "pvcs-text",
        "timeout-nan",
        "timeout-inf",
        "timeout-negative",
        "timeout-zero",
        "cinder-unknown",
        "unknown-flag",
    ],
)
def test_bad_option(capsys: pytest.CaptureFixture[str], argv: list[str], option: str) -> None:
    """Out-of-range or malformed options: exit 2 and one line naming the option, before anything starts."""
    code, out, err = sandbox(argv, capsys)
    assert (2, "", 1) == (code, out, len(err.splitlines())), err
    assert err.startswith(option), err
