"""RBD stage/unstage against the fake ``rbd``/``udevadm`` and fake fs tools (reference/node-attach.md)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from attach.errors import (
    AuthFailed,
    DeviceBusy,
    DeviceInFlight,
    FinalAttachError,
    NotFound,
    RetryableAttachError,
    WrongDevice,
)
from attach.node import StageRequest
from attach.rbd import Rbd
from attach.runner import Process, Runner
from attach.stash import InFlight
from provisioner.csi_contract import RbdTarget, encode
from tests.fakes.world import FakeWorld

KEY = "AQBplantedCephxKey0123456789=="
IMAGE = "volumes/volume-1"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = FakeWorld(tmp_path)
    w.rbd(images={IMAGE: 64 << 20, "volumes/ns1/volume-2": 64 << 20}, key=KEY)
    yield w
    w.cleanup()


def attrs(**kw: Any) -> dict[str, str]:
    values: dict[str, Any] = {
        "monitors": ("10.0.0.1:6789", "10.0.0.2:6789"),
        "pool": "volumes",
        "image": "volume-1",
        "user": "cinder",
    }
    values.update(kw)
    return encode(RbdTarget(**values))


def request(world: FakeWorld, **kw: Any) -> StageRequest:
    values: dict[str, Any] = {
        "volume_id": "vol-1",
        "staging_path": str(world.root / "staging" / "vol-1"),
        "attributes": attrs(),
        "secrets": {"key": KEY},
        "fs_type": "ext4",
    }
    values.update(kw)
    return StageRequest(**values)


def no_key_in_argv(world: FakeWorld) -> None:
    for entry in world.argv_log():
        assert KEY not in " ".join(entry["argv"])


def test_noudev_map_stage_unstage_leaves_nothing(world: FakeWorld) -> None:
    """With noudev support the map uses -o noudev; unstage leaves no mapping, mount, stash or key file."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    maps = [a for a in world.calls("rbd") if a[:2] == ["device", "map"]]
    assert ["-o", "noudev"] == maps[0][4:6]
    assert [req.staging_path] == world.mounts_under(world.root)
    assert [] == world.calls("udevadm")
    ops.unstage("vol-1", req.staging_path)
    assert ({}, [], [], []) == (
        world.rbd_mappings(),
        world.mounts_under(world.root),
        world.stash_files(),
        world.key_files(),
    )
    no_key_in_argv(world)


def test_key_travels_in_a_0600_keyfile_that_is_removed(world: FakeWorld) -> None:
    """The cephx key reaches rbd only through --keyfile (mode 0600) and the file is gone afterwards."""
    world.ops().stage(request(world))
    entry = next(e for e in world.argv_log() if e["argv"][:2] == ["device", "map"])
    assert "0o600" == entry["keyfile_mode"]
    assert "--key" not in entry["argv"]
    assert [] == world.key_files()
    no_key_in_argv(world)


def test_udev_reorder_is_unblocked_by_targeted_trigger_within_delay_plus_one_second(world: FakeWorld) -> None:
    """The udev-reorder hang stages within udev_trigger_after + 1 s thanks to the targeted trigger."""
    world.rbd(noudev=False, udev="reorder")
    ops = world.ops()
    started = time.monotonic()
    ops.stage(request(world))
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 1.0, elapsed
    assert [["trigger", "--action=add", "--subsystem-match=block", "--sysname-match=rbd0"]] == world.calls(
        "udevadm"
    )


def test_udev_reorder_needing_broad_trigger(world: FakeWorld) -> None:
    """When the targeted trigger is not enough, the broad `udevadm trigger --type=devices` follows."""
    world.rbd(noudev=False, udev="reorder_broad")
    started = time.monotonic()
    world.ops().stage(request(world))
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 0.3 + 1.0, elapsed
    assert ["trigger", "--type=devices", "--action=add"] == world.calls("udevadm")[-1]
    assert 2 == len(world.calls("udevadm"))


def test_noudev_advertised_but_refused_falls_back_to_udev_path(world: FakeWorld) -> None:
    """`unknown map option` for noudev → the map is retried without it (and the watchdog still works)."""
    world.rbd(noudev_refused=True, udev="reorder")
    world.ops().stage(request(world))
    maps = [a for a in world.calls("rbd") if a[:2] == ["device", "map"]]
    assert 2 == len(maps)
    assert "noudev" not in maps[1]


@pytest.mark.parametrize("hang", ["map_then_hang", "none_udev"])
def test_map_hanging_past_timeout_with_live_mapping_is_adopted(world: FakeWorld, hang: str) -> None:
    """A map that never returns but left a mapping (ceph-csi #520 / no udev in a container) is adopted."""
    if hang == "none_udev":
        world.rbd(noudev=False, udev="none")
    else:
        world.rbd(hang="map_then_hang")
    with capture_logs() as logs:
        record = world.ops(map_timeout="1.0").stage(request(world))
    assert str(world.dev / "rbd0") == record.device
    assert "rbd_map_timeout_adopted" in [e["event"] for e in logs]


def test_map_hanging_without_mapping_fails_retryably_and_unstage_cleans_up(world: FakeWorld) -> None:
    """A hung map that left nothing fails retryably; the stash written before it lets unstage clean up."""
    world.rbd(hang="hang_no_mapping")
    ops = world.ops(map_timeout="0.8")
    req = request(world)
    with pytest.raises(RetryableAttachError, match="timed out"):
        ops.stage(req)
    assert ({}, [], 1) == (world.rbd_mappings(), world.key_files(), len(world.stash_files()))
    ops.unstage("vol-1", req.staging_path)
    assert [] == world.stash_files()


class _KernelHeld:
    """Models a process in D state: SIGKILL is not acted on (the fake ignores TERM; KILL is dropped here)."""

    def __init__(self, inner: Process) -> None:
        self._inner = inner
        self.argv = inner.argv
        self.pid = inner.pid

    def poll(self) -> int | None:
        return self._inner.poll()

    def wait(self, timeout: float) -> int | None:
        return self._inner.wait(timeout)

    def terminate(self) -> None:
        self._inner.terminate()

    def kill(self) -> None:
        """Not delivered: that is what D state means."""

    def output(self) -> tuple[str, str]:
        return self._inner.output()

    def close(self) -> None:
        self._inner.close()

    def really_kill(self) -> None:
        self._inner.kill()
        self._inner.wait(5)


def test_dstate_map_marks_image_in_flight_and_refuses_new_maps(world: FakeWorld) -> None:
    """A map surviving TERM and KILL marks the image in flight; new maps are refused until it is gone."""
    world.rbd(hang="dstate", dstate_seconds=30)
    settings = world.settings(map_timeout="0.6")
    runner = Runner(default_timeout=5, env=world.env)
    held: list[_KernelHeld] = []

    def spawn(argv: list[str], *, secrets: tuple[str, ...] = ()) -> Process:
        held.append(_KernelHeld(runner.spawn(argv, secrets=secrets)))
        return held[-1]

    rbd = Rbd(runner=runner, settings=settings, inflight=InFlight(settings.state_dir), spawn=spawn)
    target = RbdTarget(monitors=("10.0.0.1:6789",), pool="volumes", image="volume-1", user="cinder")
    try:
        with pytest.raises(RetryableAttachError, match="survived KILL"):
            rbd.map(target, key=KEY)
        with pytest.raises(DeviceInFlight):
            rbd.map(target, key=KEY)
        assert 1 == len([a for a in world.calls("rbd") if a[:2] == ["device", "map"]])
    finally:
        held[0].really_kill()
    world.rbd(hang="none")
    assert "rbd0" == Path(rbd.map(target, key=KEY).device).name


@pytest.mark.parametrize(
    ("code", "message", "error"),
    [
        (13, "rbd: sysfs write failed\nrbd: map failed: (13) Permission denied", AuthFailed),
        (6, "rbd: sysfs write failed\nrbd: map failed: (6) No such device or address", FinalAttachError),
        (110, "rbd: sysfs write failed\nrbd: map failed: (110) Connection timed out", RetryableAttachError),
        (
            108,
            "rbd: sysfs write failed\nrbd: map failed: (108) Cannot send after transport endpoint shutdown",
            RetryableAttachError,
        ),
        (1, "rbd: sysfs write failed", RetryableAttachError),
    ],
)
def test_map_exit_codes_map_to_errors(world: FakeWorld, code: int, message: str, error: type) -> None:
    """rbd map failures (blocklisted, ENXIO, ETIMEDOUT, 108, other) become the right error class."""
    world.rbd(map_exit={"code": code, "message": message})
    with pytest.raises(error):
        world.ops().stage(request(world))
    assert [] == world.key_files()


def test_wrong_key_is_auth_failure(world: FakeWorld) -> None:
    """A wrong cephx key is a final authentication error."""
    with pytest.raises(AuthFailed):
        world.ops().stage(request(world, secrets={"key": "AQBwrong=="}))


def test_missing_image_is_not_found(world: FakeWorld) -> None:
    """Mapping an image that does not exist answers NotFound."""
    with pytest.raises(NotFound):
        world.ops().stage(request(world, attributes=attrs(image="nope")))


def test_existing_mapping_is_adopted_without_a_new_map(world: FakeWorld) -> None:
    """A retried stage after a crash (mapping present, stash lost) adopts the mapping."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    world.stash_files()[0].unlink()
    ops.stage(req)
    assert 1 == len([a for a in world.calls("rbd") if a[:2] == ["device", "map"]])
    assert 1 == len(world.calls("mkfs.ext4"))


def test_stage_is_idempotent(world: FakeWorld) -> None:
    """Staging a staged volume again runs no command."""
    ops = world.ops()
    ops.stage(request(world))
    before = len(world.argv_log())
    ops.stage(request(world))
    assert before == len(world.argv_log())


def _reboot(world: FakeWorld) -> None:
    """Mappings and mounts vanish; the state dir (stash) survives."""
    shutil.rmtree(world.sysfs)
    world.sysfs.mkdir()
    for node in world.dev.iterdir():
        node.unlink()
    world.mountinfo.write_text("")
    (world.world / "state.json").unlink()


def test_stage_after_reboot_reattaches_without_formatting(world: FakeWorld) -> None:
    """After a node reboot (stash present, mapping gone) stage maps and mounts again, no second mkfs."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    _reboot(world)
    ops = world.ops()
    ops.stage(req)
    assert [req.staging_path] == world.mounts_under(world.root)
    assert 1 == len(world.calls("mkfs.ext4"))
    assert 2 == len([a for a in world.calls("rbd") if a[:2] == ["device", "map"]])


@pytest.mark.parametrize("source", ["snapshot", "volume", "adopted"])
def test_blank_device_of_restored_or_adopted_volume_is_never_formatted(world: FakeWorld, source: str) -> None:
    """Blank + not new → refuse (FinalAttachError), mkfs never runs."""
    with pytest.raises(FinalAttachError, match="refusing to format"):
        world.ops().stage(request(world, attributes=attrs(content_source=source)))
    assert [] == world.calls("mkfs.ext4")


def test_existing_filesystem_is_not_formatted(world: FakeWorld) -> None:
    """A new volume that already carries a filesystem (earlier stage) is mounted as is."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    ops.unstage("vol-1", req.staging_path)
    ops.stage(req)
    assert 1 == len(world.calls("mkfs.ext4"))


def test_grow_fs_runs_resize2fs(world: FakeWorld) -> None:
    """growFs=true grows the filesystem after mounting."""
    world.ops().stage(request(world, attributes=attrs(grow_fs=True)))
    assert [[str(world.dev / "rbd0")]] == world.calls("resize2fs")


def test_xfs_uses_mkfs_xfs_and_xfs_growfs(world: FakeWorld) -> None:
    """fsType xfs → `mkfs.xfs -K`; growFs → xfs_growfs on the mount path."""
    req = request(world, fs_type="xfs", attributes=attrs(grow_fs=True))
    world.ops().stage(req)
    assert [["-q", "-K", str(world.dev / "rbd0")]] == world.calls("mkfs.xfs")
    assert [[req.staging_path]] == world.calls("xfs_growfs")


def test_readonly_maps_ro_and_mounts_ro(world: FakeWorld) -> None:
    """A read-only stage maps with -o noudev,ro and mounts ro (no grow)."""
    world.ops().stage(request(world, readonly=True, attributes=attrs(grow_fs=True)))
    maps = [a for a in world.calls("rbd") if a[:2] == ["device", "map"]]
    assert "noudev,ro" == maps[0][maps[0].index("-o") + 1]
    assert "ro" in world.calls("mount")[0][world.calls("mount")[0].index("-o") + 1].split(",")
    assert [] == world.calls("resize2fs")


def test_block_mode_attaches_without_filesystem(world: FakeWorld) -> None:
    """Block volume mode: map only — no blkid, mkfs or mount at stage."""
    world.ops().stage(request(world, block=True, fs_type=""))
    assert ([], [], []) == (world.calls("blkid"), world.calls("mkfs.ext4"), world.calls("mount"))


def test_rados_namespace_image_spec(world: FakeWorld) -> None:
    """pool/namespace/image is mapped as such and found again in sysfs by pool_ns."""
    record = world.ops().stage(request(world, attributes=attrs(rados_namespace="ns1", image="volume-2")))
    maps = [a for a in world.calls("rbd") if a[:2] == ["device", "map"]]
    assert "volumes/ns1/volume-2" == maps[0][-1]
    assert "0" == record.rbd_id


def test_unmap_ebusy_is_retried(world: FakeWorld) -> None:
    """EBUSY (exit 16) on unmap is retried with backoff until it succeeds."""
    world.rbd(unmap_busy=2)
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    ops.unstage("vol-1", req.staging_path)
    assert 3 == len([a for a in world.calls("rbd") if a[:2] == ["device", "unmap"]])
    assert {} == world.rbd_mappings()


def test_unmap_ebusy_forever_keeps_stash_and_reports_busy(world: FakeWorld) -> None:
    """EBUSY beyond the retries → DeviceBusy, stash kept so a later unstage can finish."""
    world.rbd(unmap_busy=100)
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    with pytest.raises(DeviceBusy):
        ops.unstage("vol-1", req.staging_path)
    assert 1 == len(world.stash_files())
    assert [] == [a for a in world.calls("rbd") if "force" in " ".join(a)]


def test_force_unmap_when_configured(world: FakeWorld) -> None:
    """With force_unmap the last attempt uses -o noudev,force."""
    world.rbd(unmap_busy=100)
    ops = world.ops(force_unmap="true")
    req = request(world)
    ops.stage(req)
    ops.unstage("vol-1", req.staging_path)
    last = [a for a in world.calls("rbd") if a[:2] == ["device", "unmap"]][-1]
    assert ["-o", "noudev,force"] == last[4:6]


def test_unmap_not_mapped_is_success(world: FakeWorld) -> None:
    """Exit 22 "not a mapped image" on unmap counts as done."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    state_path = world.world / "state.json"
    import json

    state = json.loads(state_path.read_text())
    state["rbd"]["mappings"] = {}
    state_path.write_text(json.dumps(state))
    ops.unstage("vol-1", req.staging_path)
    assert [] == world.stash_files()


def test_unmap_refused_while_device_has_holders(world: FakeWorld) -> None:
    """A device with holders (e.g. device-mapper on top) is not unmapped."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    (world.sysfs / "block" / "rbd0" / "holders" / "dm-3").mkdir()
    with pytest.raises(DeviceBusy, match="dm-3"):
        ops.unstage("vol-1", req.staging_path)
    assert 1 == len(world.rbd_mappings())


def test_busy_umount_is_reported_and_never_lazy(world: FakeWorld) -> None:
    """A busy staging mount fails unstage (DeviceBusy) without `umount -l` and without unmapping."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    world.set(umount_busy=1)
    with pytest.raises(DeviceBusy):
        ops.unstage("vol-1", req.staging_path)
    assert [] == [a for a in world.calls("umount") if "-l" in a]
    assert 1 == len(world.rbd_mappings())
    ops.unstage("vol-1", req.staging_path)
    assert {} == world.rbd_mappings()


def test_unstage_of_unknown_volume_succeeds(world: FakeWorld) -> None:
    """Unstage with no stash and nothing mounted is a no-op success."""
    world.ops().unstage("never-staged", str(world.root / "staging" / "x"))
    assert [] == world.calls("rbd")


def test_no_secret_in_logs(world: FakeWorld) -> None:
    """Neither the cephx key nor the key file contents appear in any log event."""
    world.rbd(noudev=False, udev="reorder")
    with capture_logs() as logs:
        ops = world.ops()
        req = request(world)
        ops.stage(req)
        ops.unstage("vol-1", req.staging_path)
    assert logs
    assert [] == [e for e in logs if KEY in repr(e)]


def test_printed_device_must_match_sysfs(world: FakeWorld) -> None:
    """When rbd prints a device other than the one sysfs maps for the image, stage refuses it."""
    world.rbd(print_device="/dev/rbd7")
    with pytest.raises(WrongDevice, match="rbd7"):
        world.ops().stage(request(world))
    assert [] == world.calls("mkfs.ext4")
