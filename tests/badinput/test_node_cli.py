"""Hostile ``cinder-attach stage`` / ``unstage``: exit 2, one line naming the field, nothing run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.csi_contract import RbdTarget, encode
from tests.fakes.world import FakeWorld

KEY = "AQBPlantedCliKey0000000000000000000000=="


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = FakeWorld(tmp_path)
    w.rbd(images={"volumes/img1": 64 << 20}, key=KEY)
    yield w
    w.cleanup()


def ctx(world: FakeWorld, **kw: str) -> str:
    attrs = encode(RbdTarget(monitors=("10.0.0.1:6789",), pool="volumes", image="img1", user="cinder")) | kw
    path = world.root / "ctx.json"
    path.write_text(json.dumps(attrs))
    return str(path)


CASES = [
    ("pool --id=admin", {"ctx": {"pool": "--id=admin"}}, "volume context: pool:"),
    (
        "user --keyring",
        {"ctx": {"user": "--keyring=/etc/ceph/ceph.client.admin.keyring"}},
        "volume context: user:",
    ),
    ("monitors --", {"ctx": {"monitors": "--keyring=/x"}}, "volume context: monitors[0]:"),
    ("NUL in context", {"ctx": {"image": "img1\u0000"}}, "volume context: image:"),
    ("relative path", {"path": "staging"}, "staging_target_path:"),
    ("dotdot path", {"path": "/x/../etc"}, "staging_target_path:"),
    ("outside kubelet dir", {"path": "/etc/x"}, "staging_target_path:"),
    ("long volume id", {"volume_id": "v" * 4000}, "volume_id:"),
    ("fs type", {"fs_type": "ext4 -F"}, "fs_type:"),
    ("mount flag", {"flag": "loop"}, "mount_flags[0]:"),
]


@pytest.mark.parametrize(("name", "case", "field"), CASES, ids=[c[0] for c in CASES])
def test_stage_refuses_with_exit_2(world: FakeWorld, name: str, case: dict[str, object], field: str) -> None:
    """Exit 2, the last (only non-log) stderr line names the field, no traceback, no tool ran, no stash."""
    args = [
        "stage",
        "--volume-context",
        ctx(world, **case.get("ctx", {})),
        "--volume-id",
        str(case.get("volume_id", "vol-1")),
    ]  # type: ignore[arg-type]
    args += [
        "--staging-path",
        str(case.get("path", world.root / "staging")),
        "--fs-type",
        str(case.get("fs_type", "ext4")),
    ]
    if "flag" in case:
        args += ["--mount-flag", str(case["flag"])]
    result = world.run_cli(*args)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert (2, "", 1) == (result.returncode, result.stdout, len(lines))
    assert lines[0].startswith("cinder-attach stage: ")
    assert field in lines[0]
    assert "Traceback" not in result.stderr
    assert ([], []) == (world.argv_log(), world.stash_files())


def test_unstage_of_unknown_volume_leaves_other_mounts(world: FakeWorld) -> None:
    """``unstage`` of a never-staged id given another volume's staging path: exit 0, that mount stays."""
    staging = str(world.root / "staging")
    secrets = world.root / "sec.json"
    secrets.write_text(json.dumps({"key": KEY}))
    stage = world.run_cli("stage", "--volume-context", ctx(world), "--secrets", str(secrets),
                          "--staging-path", staging, "--volume-id", "vol-1")  # fmt: skip
    assert 0 == stage.returncode, stage.stderr
    other = world.run_cli("unstage", "--volume-id", "ghost", "--staging-path", staging)
    assert (0, [staging], 1) == (other.returncode, world.mounts_under(world.root), len(world.rbd_mappings()))
    assert [] == world.calls("umount")


@pytest.mark.parametrize("shape", ["regular file", "under a regular file"])
def test_state_dir_that_cannot_be_a_directory_is_exit_2_naming_it(world: FakeWorld, shape: str) -> None:
    """A state dir that is a file (or lies under one): exit 2, one line naming state_dir, not [Errno 17]."""
    blocker = world.root / "not-a-dir"
    blocker.write_text("x")
    state = blocker if shape == "regular file" else blocker / "state"
    result = subprocess.run(
        [sys.executable, "-m", "attach.cli", "unstage", "--volume-id", "vol-1", "--staging-path",
         str(world.root / "staging")],
        env={**world.env, "CINDER_ATTACH_STATE_DIR": str(state)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert (2, 1) == (result.returncode, len(lines)), result.stderr
    assert lines[0].startswith("cinder-attach unstage: ConfigError: state_dir: ")
    assert "Errno" not in result.stderr
    assert "Traceback" not in result.stderr
    assert [] == world.argv_log()
