"""The backup team's commands end to end: ``snapshots``, ``snapshot create``, ``restore``.

The real command line (``provisioner.cli.main.main``) against the Kubernetes simulator (through a
kubeconfig, like kubectl) and the Cinder emulator (through a provisioner config file), with the controller
running. The simulator's own snapshot controller is off: where a VolumeSnapshot must become ready, the
test plays the snapshot controller and snapshotter itself (a real Cinder snapshot, a content, statuses),
so what is asserted is exactly what the CLI wrote and how it followed it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from provisioner.cli.main import main
from provisioner.domain import names
from tests.e2e.world import World, emulator_world, wait_for

SNAP_API = "snapshot.storage.k8s.io/v1"
SIM_CONTROLLERS = ("pv-binder", "protection", "gc")  # the test plays the snapshot controller


@pytest.fixture
def cli_world(tmp_path: Path) -> Iterator[tuple[World, Path, Path]]:
    """A world with the controller running, a kubeconfig and a provisioner config file for the CLI."""
    with emulator_world(sim_kwargs={"controllers": SIM_CONTROLLERS}) as world:
        world.start_replica()
        kubeconfig = world.sim.write_kubeconfig(tmp_path / "kubeconfig")
        config = tmp_path / "provisioner.yaml"
        config.write_text(
            yaml.safe_dump(
                {"cluster_id": "e2e", "clouds": {"default": world.cloud}, "default_cloud": "default"}
            )
        )
        world.create_class("fast", {})
        yield world, kubeconfig, config


def cli(
    capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """The command as a user runs it: its own process, exit code, stdout, stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", *argv],
        capture_output=True, text=True, timeout=90, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def bound_claim(world: World, name: str = "data", namespace: str = "default") -> str:
    """A bound claim; its Cinder volume id."""
    world.create_pvc(name, "fast", namespace=namespace)
    world.wait_bound(name, namespace)
    pv = world.pv_of(name, namespace)
    assert pv is not None
    return str(pv["metadata"]["annotations"][names.ANN_VOLUME_ID])


def cinder_snapshot(world: World, volume_id: str, *, namespace: str = "default", name: str = "s") -> str:
    """A Cinder snapshot tagged the way our controller tags the snapshots it cuts."""
    tags = {names.META_CLUSTER: "e2e", names.META_PVC_NAMESPACE: namespace, names.META_SNAPSHOT_NAME: name}
    snap = world.cinder.create_snapshot(volume_id, name=f"snapshot-{name}", metadata=tags, force=True)
    wait_for(lambda: world.cinder.get_snapshot(snap.id).status == "available", 10, "snapshot available")
    return str(snap.id)


def ready_volume_snapshot(
    world: World, name: str, handle: str, *, claim: str = "data", size: str = "1Gi"
) -> None:
    """What the snapshot controller + snapshotter leave: a bound content and a ready VolumeSnapshot."""
    world.kube.create(
        "volumesnapshotcontents",
        {
            "apiVersion": SNAP_API,
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": f"snapcontent-{name}"},
            "spec": {
                "driver": names.CSI_DRIVER_NAME,
                "deletionPolicy": "Retain",
                "source": {"snapshotHandle": handle},
                "volumeSnapshotRef": {"namespace": "default", "name": name},
            },
        },
    )
    vs = world.sim.get("volumesnapshots", "default", name)
    if vs is None:
        world.kube.create(
            "volumesnapshots",
            {
                "apiVersion": SNAP_API,
                "kind": "VolumeSnapshot",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "volumeSnapshotClassName": "cinder-snap",
                    "source": {"persistentVolumeClaimName": claim},
                },
            },
            namespace="default",
        )
    world.kube.patch(
        "volumesnapshots",
        name,
        {
            "status": {
                "boundVolumeSnapshotContentName": f"snapcontent-{name}",
                "readyToUse": True,
                "restoreSize": size,
            }
        },
        namespace="default",
        subresource="status",
    )


def snapshot_classes(world: World) -> None:
    for name, params, driver in (
        ("cinder-snap", {}, names.CSI_DRIVER_NAME),
        ("cinder-backup", {"type": "backup"}, names.CSI_DRIVER_NAME),
        ("other-driver", {"type": "backup"}, "rbd.csi.ceph.com"),
    ):
        world.kube.create(
            "volumesnapshotclasses",
            {
                "apiVersion": SNAP_API,
                "kind": "VolumeSnapshotClass",
                "metadata": {"name": name},
                "driver": driver,
                "deletionPolicy": "Delete",
                "parameters": params,
            },
        )


# ---- snapshots ------------------------------------------------------------------------------------------


def test_snapshots_lists_snapshots_and_backups_newest_first(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two snapshots and a backup of the claim's volume, newest first, the VolumeSnapshot named."""
    world, kubeconfig, config = cli_world
    volume_id = bound_claim(world)
    first = cinder_snapshot(world, volume_id, name="first")
    second = cinder_snapshot(world, volume_id, name="second")
    backup = world.cinder.create_backup(
        volume_id, name="nightly", metadata={names.META_CLUSTER: "e2e"}, force=True
    )
    wait_for(lambda: world.cinder.get_backup(backup.id).status == "available", 10, "backup available")
    ready_volume_snapshot(world, "picked", first)
    other = bound_claim(world, "other")
    cinder_snapshot(world, other, name="not-this-claim")
    code, out, err = cli(
        capsys,
        "snapshots",
        "default/data",
        "-o",
        "json",
        "--kubeconfig",
        str(kubeconfig),
        "--config",
        str(config),
    )
    assert (0, "") == (code, err)
    rows = json.loads(out)
    assert [backup.id, second, first] == [r["id"] for r in rows]
    assert ["backup", "snapshot", "snapshot"] == [r["kind"] for r in rows]
    assert ["", "default/second", "default/picked"] == [r["volumesnapshot"] for r in rows]
    assert {"available"} == {r["status"] for r in rows}
    assert {1} == {r["size_gib"] for r in rows}
    code, table, _ = cli(
        capsys, "snapshots", "default/data", "--kubeconfig", str(kubeconfig), "--config", str(config)
    )
    lines = table.splitlines()
    assert 0 == code
    assert lines[0].split() == ["ID", "KIND", "CREATED", "SIZE", "STATUS", "VOLUMESNAPSHOT"]
    assert [backup.id, second, first] == [line.split()[0] for line in lines[1:]]


def test_snapshots_of_an_unknown_or_unbound_claim_fail_with_1(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing claim, an unbound one: exit 1 naming it; nothing on stdout."""
    world, kubeconfig, config = cli_world
    world.create_pvc("pending", "no-such-class")
    for claim, why in (
        ("ghost", "PersistentVolumeClaim default/ghost not found"),
        ("pending", "PersistentVolumeClaim default/pending is not bound yet"),
    ):
        code, out, err = cli(
            capsys, "snapshots", f"default/{claim}", "--kubeconfig", str(kubeconfig), "--config", str(config)
        )
        assert (1, "", f"error: {why}\n") == (code, out, err)


# ---- snapshot create ------------------------------------------------------------------------------------


def start(*argv: str) -> subprocess.Popen[str]:
    """The command started in its own process (for --wait while the test plays the controllers)."""
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli.main", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_snapshot_create_backup_uses_our_backup_class_and_waits_for_ready(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--backup picks the class of our driver with type backup; --wait returns once readyToUse."""
    world, kubeconfig, _ = cli_world
    volume_id = bound_claim(world)
    snapshot_classes(world)
    proc = start(
        "snapshot", "create", "default/data", "--name", "nightly", "--backup", "--wait", "--timeout", "20",
        "--kubeconfig", str(kubeconfig),
    )  # fmt: skip
    wait_for(lambda: world.sim.get("volumesnapshots", "default", "nightly") is not None, 10, "VolumeSnapshot")
    vs = world.sim.get("volumesnapshots", "default", "nightly")
    assert vs is not None
    assert {
        "volumeSnapshotClassName": "cinder-backup",
        "source": {"persistentVolumeClaimName": "data"},
    } == vs["spec"]
    time.sleep(0.7)
    assert proc.poll() is None  # not ready yet: still waiting
    ready_volume_snapshot(world, "nightly", cinder_snapshot(world, volume_id, name="nightly"))
    out, err = proc.communicate(timeout=30)
    assert 0 == proc.returncode, err
    assert "default/nightly ready: snapcontent-nightly restoreSize=1Gi\n" == out
    assert "readyToUse=false" in err
    assert "readyToUse=true" in err


def test_snapshot_create_reports_the_snapshot_error_with_1(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A VolumeSnapshot whose status says error: exit 1 with that message."""
    world, kubeconfig, _ = cli_world
    bound_claim(world)
    snapshot_classes(world)
    proc = start(
        "snapshot", "create", "default/data", "--name", "broken", "--wait", "--timeout", "20",
        "--kubeconfig", str(kubeconfig),
    )  # fmt: skip
    wait_for(lambda: world.sim.get("volumesnapshots", "default", "broken") is not None, 10, "VolumeSnapshot")
    vs = world.sim.get("volumesnapshots", "default", "broken")
    assert vs is not None
    assert "cinder-snap" == vs["spec"]["volumeSnapshotClassName"]
    world.kube.patch(
        "volumesnapshots",
        "broken",
        {"status": {"readyToUse": False, "error": {"message": "Cinder snapshot went to error"}}},
        namespace="default",
        subresource="status",
    )
    _, err = proc.communicate(timeout=30)
    assert 1 == proc.returncode
    assert (
        "error: volumesnapshot default/broken failed: Cinder snapshot went to error\n"
        == err.splitlines(True)[-1]
    )


def test_snapshot_create_without_a_class_of_our_driver_is_refused(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """No VolumeSnapshotClass of cinder.netvol.io: exit 1 saying so, no VolumeSnapshot created."""
    world, kubeconfig, _ = cli_world
    bound_claim(world)
    code, out, err = cli(
        capsys, "snapshot", "create", "default/data", "--backup", "--kubeconfig", str(kubeconfig)
    )
    assert (1, "") == (code, out)
    assert "no VolumeSnapshotClass of driver cinder.netvol.io with type backup" in err
    assert [] == world.sim.list("volumesnapshots")


# ---- restore --------------------------------------------------------------------------------------------


def test_restore_snapshot_id_creates_the_annotated_claim_and_waits_until_bound(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """restore SNAPSHOT_ID: the annotation, the source's class and size; Bound to a volume from it."""
    world, kubeconfig, config = cli_world
    snap = cinder_snapshot(world, bound_claim(world), name="s1")
    code, out, err = cli(
        capsys, "restore", snap, "--to", "default/restored", "--wait", "--timeout", "30",
        "--kubeconfig", str(kubeconfig), "--config", str(config),
    )  # fmt: skip
    assert 0 == code, err
    pvc = world.pvc("restored")
    assert pvc is not None
    assert snap == pvc["metadata"]["annotations"][names.ANN_RESTORE_FROM_SNAPSHOT]
    assert ("fast", {"storage": "1Gi"}) == (
        pvc["spec"]["storageClassName"],
        pvc["spec"]["resources"]["requests"],
    )
    assert f"default/restored Bound to {pvc['spec']['volumeName']}\n" == out
    volume = world.cinder.get_volume(world.pv_of("restored")["metadata"]["annotations"][names.ANN_VOLUME_ID])  # type: ignore[index]
    assert snap == volume.snapshot_id
    assert "Bound" in err.splitlines()[-1]


def test_restore_is_refused_by_the_controllers_guard(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A snapshot of another namespace: the controller refuses (the CLI never bypasses it); exit 1, why."""
    world, kubeconfig, _ = cli_world
    world.sim.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}})
    foreign = cinder_snapshot(world, bound_claim(world, "theirs", "team-b"), namespace="team-b", name="b1")
    code, out, err = cli(
        capsys, "restore", foreign, "--to", "default/stolen", "--storage-class", "fast", "--size", "1Gi",
        "--wait", "--timeout", "30", "--kubeconfig", str(kubeconfig),
    )  # fmt: skip
    assert (1, "") == (code, out)
    last = err.splitlines()[-1]
    assert last.startswith("error: restore into default/stolen refused: ")
    assert names.ANN_RESTORE_FROM_SNAPSHOT in last
    assert [] == [v for v in world.our_volumes() if v.snapshot_id == foreign]


def test_restore_from_volumesnapshot_uses_data_source(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--from NS/VS: spec.dataSource names the VolumeSnapshot; size from restoreSize; Bound."""
    world, kubeconfig, config = cli_world
    snap = cinder_snapshot(world, bound_claim(world), name="vs1")
    ready_volume_snapshot(world, "vs1", snap, size="2Gi")
    code, _, err = cli(
        capsys, "restore", "--from", "default/vs1", "--to", "default/copy", "--wait", "--timeout", "30",
        "--kubeconfig", str(kubeconfig), "--config", str(config),
    )  # fmt: skip
    assert 0 == code, err
    pvc = world.pvc("copy")
    assert pvc is not None
    assert {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "vs1"} == pvc["spec"][
        "dataSource"
    ]
    assert {"storage": "2Gi"} == pvc["spec"]["resources"]["requests"]
    pv = world.pv_of("copy")
    assert pv is not None
    volume = world.cinder.get_volume(pv["metadata"]["annotations"][names.ANN_VOLUME_ID])
    assert (snap, 2) == (volume.snapshot_id, volume.size_gib)  # restored into a larger size at create


def test_restore_backup_creates_the_annotated_claim(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--backup BACKUP_ID: the restore-from-backup annotation, the backup's size and class; Bound."""
    world, kubeconfig, config = cli_world
    volume_id = bound_claim(world)
    tags = {names.META_CLUSTER: "e2e", names.META_PVC_NAMESPACE: "default"}
    backup = world.cinder.create_backup(volume_id, name="b", metadata=tags, force=True)
    wait_for(lambda: world.cinder.get_backup(backup.id).status == "available", 10, "backup available")
    code, out, err = cli(
        capsys, "restore", "--backup", backup.id, "--to", "default/from-backup", "--wait", "--timeout", "30",
        "--kubeconfig", str(kubeconfig), "--config", str(config),
    )  # fmt: skip
    assert 0 == code, err
    assert out.startswith("default/from-backup Bound to pvc-")
    pvc = world.pvc("from-backup")
    assert pvc is not None
    assert {"netvol.io/restore-from-backup": backup.id} == {
        k: v for k, v in pvc["metadata"]["annotations"].items() if k.startswith("netvol.io/restore")
    }
    assert ("fast", {"storage": "1Gi"}) == (
        pvc["spec"]["storageClassName"],
        pvc["spec"]["resources"]["requests"],
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["restore", "--to", "default/x"], "give exactly one source"),
        (["restore", "abc", "--backup", "def", "--to", "default/x"], "give exactly one source"),
        (["restore", "../volumes/x", "--to", "default/x"], "SNAPSHOT_ID: '../volumes/x' is not a Cinder id"),
        (["restore", "abc", "--to", "x"], "--to: expected NAMESPACE/NAME"),
        (["restore", "abc", "--to", "default/x", "--size", "lots"], "--size"),
        (["snapshots", "data"], "NAMESPACE/PVC: expected NAMESPACE/NAME"),
        (
            ["snapshot", "create", "default/data", "--name", "Bad_Name"],
            "--name: 'Bad_Name' is not a Kubernetes",
        ),
        (["restore", "abc"], "the following arguments are required: --to"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Bad command lines: exit 2, one stderr line naming the argument, nothing on stdout, no connection."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    assert (2, "") == (code, out)
    assert 1 == len(err.strip().splitlines())
    assert message in err


def test_cross_namespace_from_is_refused_with_1(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--from in another namespace than --to: exit 1 (Kubernetes would not restore across namespaces)."""
    _, kubeconfig, _ = cli_world
    code, out, err = cli(
        capsys, "restore", "--from", "team-b/vs", "--to", "default/x", "--kubeconfig", str(kubeconfig)
    )
    assert (1, "") == (code, out)
    assert "another namespace" in err


def test_kubeconfig_from_the_environment_and_a_missing_one(
    cli_world: tuple[World, Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """$KUBECONFIG is used without --kubeconfig; a missing --kubeconfig is exit 2 naming the flag."""
    world, kubeconfig, config = cli_world
    bound_claim(world)
    code, out, _ = cli(
        capsys,
        "snapshots",
        "default/data",
        "-o",
        "json",
        "--config",
        str(config),
        env={"KUBECONFIG": str(kubeconfig)},
    )
    assert (0, []) == (code, json.loads(out))
    code, out, err = cli(capsys, "snapshots", "default/data", "--kubeconfig", "/nonexistent/kubeconfig")
    assert (2, "") == (code, out)
    assert "error: --kubeconfig: '/nonexistent/kubeconfig' is not a readable file\n" == err
