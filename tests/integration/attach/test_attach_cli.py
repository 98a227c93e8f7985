"""``cinder-attach stage`` / ``unstage`` from a shell, as separate processes in a fake world."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.csi_contract import RbdTarget, encode
from tests.fakes.world import FakeWorld

KEY = "AQBcliPlantedKey=="


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = FakeWorld(tmp_path)
    w.rbd(images={"volumes/volume-1": 64 << 20}, key=KEY, noudev=False, udev="reorder")
    yield w
    w.cleanup()


def write(path: Path, data: dict[str, str]) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def context(world: FakeWorld, **kw: str) -> str:
    attrs = encode(RbdTarget(monitors=("10.0.0.1:6789",), pool="volumes", image="volume-1", user="cinder"))
    return write(world.root / "ctx.json", attrs | kw)


def test_stage_then_unstage_from_the_shell(world: FakeWorld) -> None:
    """stage exits 0 silently and mounts; unstage exits 0 and leaves nothing behind."""
    staging = str(world.root / "staging")
    stage = world.run_cli(
        "stage",
        "--volume-context", context(world),
        "--secrets", write(world.root / "sec.json", {"key": KEY}),
        "--staging-path", staging,
        "--volume-id", "vol-1",
        "--fs-type", "ext4",
    )  # fmt: skip
    assert (0, "") == (stage.returncode, stage.stdout)
    assert [staging] == world.mounts_under(world.root)
    assert KEY not in stage.stderr
    unstage = world.run_cli("unstage", "--volume-id", "vol-1", "--staging-path", staging)
    assert 0 == unstage.returncode
    assert ({}, [], []) == (world.rbd_mappings(), world.mounts_under(world.root), world.stash_files())


def test_flags_override_environment(world: FakeWorld) -> None:
    """--udev-trigger-after on the command line beats CINDER_ATTACH_UDEV_TRIGGER_AFTER."""
    result = world.run_cli(
        "--udev-trigger-after", "0.2", "--map-timeout", "5",
        "stage",
        "--volume-context", context(world),
        "--secrets", write(world.root / "sec.json", {"key": KEY}),
        "--staging-path", str(world.root / "staging"),
        "--volume-id", "vol-1",
    )  # fmt: skip
    assert 0 == result.returncode, result.stderr
    triggers = [json.loads(line) for line in result.stderr.splitlines() if '"rbd_map_udev_hang"' in line]
    assert 1 == len(triggers)


def test_bad_volume_context_is_one_clear_line_and_exit_2(world: FakeWorld) -> None:
    """A malformed context fails with exit 2 and one line naming the key."""
    result = world.run_cli(
        "stage",
        "--volume-context", write(world.root / "ctx.json", {"type": "nfs"}),
        "--staging-path", str(world.root / "staging"),
        "--volume-id", "vol-1",
    )  # fmt: skip
    assert 2 == result.returncode
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cinder-attach stage: InvalidRequest: volume context: type:")


def test_unreadable_json_is_exit_2(world: FakeWorld) -> None:
    """A context file that is not JSON → exit 2 with the path in the message."""
    bad = world.root / "ctx.json"
    bad.write_text("{not json")
    result = world.run_cli("stage", "--volume-context", str(bad), "--staging-path", "/x", "--volume-id", "v")
    assert 2 == result.returncode
    assert str(bad) in result.stderr.strip().splitlines()[-1]


def test_retryable_failure_is_exit_1(world: FakeWorld) -> None:
    """A transient failure (monitors unreachable) exits 1."""
    world.rbd(map_exit={"code": 110, "message": "rbd: map failed: (110) Connection timed out"})
    result = world.run_cli(
        "stage",
        "--volume-context", context(world),
        "--secrets", write(world.root / "sec.json", {"key": KEY}),
        "--staging-path", str(world.root / "staging"),
        "--volume-id", "vol-1",
    )  # fmt: skip
    assert 1 == result.returncode
    assert "monitors unreachable" in result.stderr.strip().splitlines()[-1]


def test_bad_setting_is_exit_2(world: FakeWorld) -> None:
    """A malformed setting names its environment variable."""
    result = world.run_cli("--map-timeout", "soon", "unstage", "--volume-id", "v", "--staging-path", "/x")
    assert 2 == result.returncode
    assert "CINDER_ATTACH_MAP_TIMEOUT" in result.stderr
