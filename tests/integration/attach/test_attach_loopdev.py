"""Real blkid / mkfs.ext4 / mount / resize2fs on loop devices behind the fake ``rbd`` (root + loop only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from attach.errors import CommandFailed
from attach.node import StageRequest
from provisioner.csi_contract import RbdTarget, encode
from tests.fakes.world import FakeWorld, can_use_loop_devices

pytestmark = [
    pytest.mark.loopdev,
    pytest.mark.skipif(not can_use_loop_devices(), reason="needs root, /dev/loop-control and util-linux"),
]

IMAGE = "volumes/volume-loop"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = FakeWorld(tmp_path, fake_fs=False, loop=True)
    w.rbd(images={IMAGE: 64 << 20})
    yield w
    w.cleanup()


def request(world: FakeWorld, **attrs: object) -> StageRequest:
    target = RbdTarget(monitors=("10.0.0.1:6789",), pool="volumes", image="volume-loop", **attrs)  # type: ignore[arg-type]
    return StageRequest(
        volume_id="vol-loop",
        staging_path=str(world.root / "staging"),
        attributes=encode(target),
        secrets={},
        fs_type="ext4",
    )


def test_real_ext4_stage_publish_unpublish_unstage(world: FakeWorld) -> None:
    """A real ext4 is created, mounted, bind-published; data survives unstage + restage (no reformat)."""
    ops = world.ops()
    req = request(world)
    record = ops.stage(req)
    assert os.path.realpath(record.device).startswith("/dev/loop")
    Path(req.staging_path, "hello.txt").write_text("persisted")
    target = str(world.root / "pod" / "mount")
    ops.publish(
        volume_id="vol-loop", staging_path=req.staging_path, target_path=target, readonly=False, block=False
    )
    assert "persisted" == Path(target, "hello.txt").read_text()
    stats = ops.stats(volume_id="vol-loop", volume_path=target)
    assert 40 << 20 < stats.total_bytes <= 64 << 20
    ops.unpublish(volume_id="vol-loop", target_path=target)
    ops.unstage("vol-loop", req.staging_path)
    assert ([], {}) == (world.mounts_under(world.root), world.rbd_mappings())
    ops.stage(req)
    assert "persisted" == Path(req.staging_path, "hello.txt").read_text()
    ops.unstage("vol-loop", req.staging_path)


def test_real_readonly_publish_is_readonly(world: FakeWorld) -> None:
    """A read-only publish is a read-only bind mount: writes fail with EROFS."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    target = str(world.root / "pod" / "ro")
    ops.publish(
        volume_id="vol-loop", staging_path=req.staging_path, target_path=target, readonly=True, block=False
    )
    with pytest.raises(OSError, match="Read-only"):
        Path(target, "x").write_text("no")
    ops.unpublish(volume_id="vol-loop", target_path=target)
    ops.unstage("vol-loop", req.staging_path)


def test_real_grow_after_image_extend(world: FakeWorld) -> None:
    """After the image grows (Cinder extend), growFs=true makes resize2fs grow the mounted ext4."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    before = ops.stats(volume_id="vol-loop", volume_path=req.staging_path).total_bytes
    ops.unstage("vol-loop", req.staging_path)
    backing = next((world.world / "backing").glob("*.img"))
    os.truncate(backing, 128 << 20)
    grown = request(world, grow_fs=True)
    try:
        ops.stage(grown)
    except CommandFailed as e:
        if "Permission denied to resize" not in e.stderr:
            raise
        ops.unstage("vol-loop", grown.staging_path)
        pytest.skip("this sandbox forbids online ext4 resize (EXT4_IOC_RESIZE_FS); real nodes allow it")
    after = ops.stats(volume_id="vol-loop", volume_path=grown.staging_path).total_bytes
    assert after > before + (50 << 20)
    ops.unstage("vol-loop", grown.staging_path)


def test_real_block_mode_publish_binds_the_device(world: FakeWorld) -> None:
    """Block mode: the device is bind-mounted onto a file; stats report the device size."""
    ops = world.ops()
    req = StageRequest(
        volume_id="vol-loop", staging_path=str(world.root / "staging"), attributes=request(world).attributes,
        secrets={}, block=True,
    )  # fmt: skip
    ops.stage(req)
    target = str(world.root / "pod" / "dev")
    ops.publish(
        volume_id="vol-loop", staging_path=req.staging_path, target_path=target, readonly=False, block=True
    )
    stats = ops.stats(volume_id="vol-loop", volume_path=target)
    assert (64 << 20, True) == (stats.total_bytes, stats.block)
    ops.unpublish(volume_id="vol-loop", target_path=target)
    ops.unstage("vol-loop", req.staging_path)
    assert not os.path.exists(target)
