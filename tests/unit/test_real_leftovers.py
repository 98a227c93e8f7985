"""tests.real_leftovers finds exactly what a run left: marked processes, mounts and loops under a root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import real_leftovers
from tests.fakes.world import can_use_loop_devices

MARK = "unit-test-mark"


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _sleeper(spawn: list[subprocess.Popen[bytes]], *args: str, mark: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != real_leftovers.RUN_MARK}
    if mark is not None:
        env[real_leftovers.RUN_MARK] = mark
    code = "import os, time; os.close(1); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.read()  # the child closed its stdout: it runs (its environ and cmdline are readable)
    proc.stdout.close()
    spawn.append(proc)
    return proc.pid


def _pids(found: real_leftovers.Leftovers) -> set[int]:
    return {int(line.split()[0]) for line in found.processes}


def test_a_process_with_the_mark_is_found_and_reaped(
    spawn: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The run's mark in a process's environment makes it ours; another mark or none does not."""
    ours = _sleeper(spawn, mark=MARK)
    other = _sleeper(spawn, mark="another-run")
    unmarked = _sleeper(spawn)
    found = real_leftovers.find(MARK, [tmp_path / "root"])
    assert {ours} == _pids(found) & {ours, other, unmarked}
    real_leftovers.reap(found)
    spawn[0].wait(10)
    assert ours not in _pids(real_leftovers.find(MARK, [tmp_path / "root"]))


def test_a_process_naming_a_path_under_a_root_is_found(
    spawn: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """A command line naming the root or a path under it counts; a sibling sharing its prefix does not."""
    root = tmp_path / "pytest-1"
    under = _sleeper(spawn, f"--config={root}/ceph.conf")
    exact = _sleeper(spawn, str(root))
    sibling = _sleeper(spawn, f"{tmp_path}/pytest-12/ceph.conf")
    assert {under, exact} == _pids(real_leftovers.find(MARK, [root])) & {under, exact, sibling}


def test_nothing_found_is_falsy(tmp_path: Path) -> None:
    """An empty answer is falsy, any entry makes it truthy."""
    assert not real_leftovers.find("no-such-mark", [tmp_path / "nothing-here"])
    assert real_leftovers.Leftovers(loops=["/dev/loop9: /x"])


@pytest.mark.loopdev
@pytest.mark.skipif(not can_use_loop_devices(), reason="needs root and /dev/loop-control")
def test_mounts_and_loop_devices_under_a_root_are_found_and_reaped(tmp_path: Path) -> None:
    """A tmpfs mounted under the root and a loop device over a file there are found, then undone."""
    root = tmp_path / "root"
    (root / "mnt").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "mnt")], check=True)
    image = root / "disk.img"
    image.write_bytes(b"\0" * (1 << 20))
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True)
    try:
        found = real_leftovers.find(MARK, [root])
        assert [f"{loop.stdout.strip()}: {image}"] == found.loops
        assert [str(root / "mnt")] == [line.split()[4] for line in found.mounts]
        assert [] == found.fuse_mounts
        assert real_leftovers.find(MARK, [tmp_path / "elsewhere"]).loops == []
        real_leftovers.reap(found)
        left = real_leftovers.find(MARK, [root])
        assert ([], []) == (left.mounts, left.loops)
    finally:
        subprocess.run(["umount", "-l", str(root / "mnt")], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", loop.stdout.strip()], capture_output=True, check=False)
