"""Volume expansion end to end: simulator + Cinder emulator + the controller + the node agent over gRPC.

The test plays the two parts that do not run here: Ceph growing the RBD image when Cinder extends the
volume (the fake node's backing file is truncated to the new size), and the kubelet (it calls
``NodeExpandVolume`` on the real node agent for a ``FileSystemResizePending`` claim, then writes what the
kubelet writes: ``status.capacity``, the condition and ``allocatedResourceStatuses`` removed, the PV's
pre-resize annotation dropped).
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.csi_contract import RbdTarget, decode
from provisioner.domain import names
from provisioner.domain.errors import KubeError
from provisioner.flows.expand import ANN_PRE_RESIZE_CAPACITY
from provisioner.testworld import objects
from tests.e2e.test_attach_grpc import Agent, mount_cap, pb2
from tests.e2e.world import World, emulator_world, wait_for
from tests.fakes.world import FakeWorld

GIB = 1 << 30


def expandable_class(world: World, name: str = "grow", *, allow: bool = True) -> None:
    body = objects.storage_class(name, {})
    body["allowVolumeExpansion"] = allow
    world.kube.create("storageclasses", body)


def resize(world: World, claim: str, size: str) -> None:
    world.kube.patch(
        "persistentvolumeclaims",
        claim,
        {"spec": {"resources": {"requests": {"storage": size}}}},
        namespace="default",
    )


def conditions(pvc: dict[str, Any] | None) -> list[str]:
    return [c["type"] for c in ((pvc or {}).get("status") or {}).get("conditions") or []]


def cinder_calls(world: World, operation: str) -> int:
    return sum(1 for c in world.emu.calls() if c.operation == operation)


def events(world: World, claim: str) -> list[tuple[str, str, str]]:
    return [(e["type"], e["reason"], e["message"]) for e in world.events_for(claim)]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Agent]:
    """The node agent (``cinder-attach serve``) in a fake node world."""
    fake = FakeWorld(tmp_path / "node")
    sock_dir = Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))
    fake.rbd(images={})
    agent = Agent(fake, sock_dir)
    yield agent
    agent.stop()
    fake.cleanup()
    shutil.rmtree(sock_dir, ignore_errors=True)


class Kubelet:
    """What kubelet does for one CSI volume on the node: stage, publish, and the node part of a resize."""

    def __init__(self, world: World, agent: Agent, claim: str) -> None:
        self.world, self.agent, self.claim = world, agent, claim
        pv = world.pv_of(claim)
        assert pv is not None
        self.pv_name = pv["metadata"]["name"]
        csi = pv["spec"]["csi"]
        self.volume_id = csi["volumeHandle"]
        self.context = dict(csi["volumeAttributes"])
        target = decode(self.context)
        assert isinstance(target, RbdTarget)
        self.image = f"{target.pool}/{target.image}"
        self.secrets: dict[str, str] = {}
        ref = csi.get("nodeStageSecretRef")
        if ref:
            secret = world.sim.get("secrets", ref["namespace"], ref["name"])
            assert secret is not None
            self.secrets = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        root = agent.world.root
        self.staging = str(root / "kubelet" / "staging" / self.volume_id)
        self.target = str(root / "kubelet" / "pods" / self.volume_id / "mount")

    def backing(self) -> Path:
        return self.agent.world.world / "backing" / (self.image.replace("/", "_") + ".img")

    def mount(self, size_gib: int) -> None:
        images = {self.image: size_gib * GIB}
        self.agent.world.rbd(images=images, key=self.secrets.get("key"))
        self.agent.node.NodeStageVolume(
            pb2.NodeStageVolumeRequest(
                volume_id=self.volume_id, staging_target_path=self.staging, volume_capability=mount_cap(),
                secrets=self.secrets, volume_context=self.context,
            )
        )  # fmt: skip
        self.agent.node.NodePublishVolume(
            pb2.NodePublishVolumeRequest(
                volume_id=self.volume_id, staging_target_path=self.staging, target_path=self.target,
                volume_capability=mount_cap(), volume_context=self.context,
            )
        )  # fmt: skip

    def ceph_grows_image(self, size_gib: int) -> None:
        with open(self.backing(), "r+b") as f:
            f.truncate(size_gib * GIB)

    def finish_resize(self) -> int:
        """NodeExpandVolume to the PV's capacity, then the kubelet's status writes; the new device size."""
        pv = self.world.sim.get("persistentvolumes", "", self.pv_name)
        assert pv is not None
        capacity = pv["spec"]["capacity"]["storage"]
        wanted = int(capacity.removesuffix("Gi")) * GIB
        answer = self.agent.node.NodeExpandVolume(
            pb2.NodeExpandVolumeRequest(
                volume_id=self.volume_id, volume_path=self.target,
                capacity_range=pb2.CapacityRange(required_bytes=wanted),
            )
        )  # fmt: skip
        pvc = self.world.pvc(self.claim)
        assert pvc is not None
        kept = [c for c in pvc["status"].get("conditions") or [] if c["type"] != "FileSystemResizePending"]
        self.world.kube.patch(
            "persistentvolumeclaims",
            self.claim,
            {
                "status": {
                    "capacity": {"storage": capacity},
                    "conditions": kept,
                    "allocatedResourceStatuses": None,
                }
            },
            namespace="default",
            subresource="status",
        )
        self.world.kube.patch(
            "persistentvolumes", self.pv_name, {"metadata": {"annotations": {ANN_PRE_RESIZE_CAPACITY: None}}}
        )
        return int(answer.capacity_bytes)

    def unmount(self) -> None:
        self.agent.node.NodeUnpublishVolume(
            pb2.NodeUnpublishVolumeRequest(volume_id=self.volume_id, target_path=self.target)
        )
        self.agent.node.NodeUnstageVolume(
            pb2.NodeUnstageVolumeRequest(volume_id=self.volume_id, staging_target_path=self.staging)
        )


def test_online_expand_grows_cinder_pv_and_filesystem(world: World, node: Agent) -> None:
    """1 Gi → 3 Gi while mounted: one extend, PV 3Gi, FileSystemResizePending, NodeExpandVolume, 3Gi."""
    world.start_replica()
    expandable_class(world)
    world.create_pvc("data", "grow", size="1Gi")
    world.wait_bound("data")
    kubelet = Kubelet(world, node, "data")
    kubelet.mount(1)
    resize(world, "data", "3Gi")
    wait_for(
        lambda: "FileSystemResizePending" in conditions(world.pvc("data")), 20, "FileSystemResizePending"
    )
    pvc, pv = world.pvc("data"), world.pv_of("data")
    assert pvc is not None
    assert pv is not None
    volume = world.cinder.get_volume(kubelet.volume_id)
    assert (3, "in-use") == (volume.size_gib, volume.status)
    assert {"storage": "3Gi"} == pv["spec"]["capacity"]
    assert "1Gi" == pv["metadata"]["annotations"][ANN_PRE_RESIZE_CAPACITY]
    assert {"storage": "1Gi"} == pvc["status"]["capacity"]  # the node has not grown it yet
    assert {"storage": "3Gi"} == pvc["status"]["allocatedResources"]
    assert {"storage": "NodeResizePending"} == pvc["status"]["allocatedResourceStatuses"]
    assert 1 == cinder_calls(world, "extend_volume")
    kubelet.ceph_grows_image(3)
    assert 3 * GIB == kubelet.finish_resize()
    assert 1 == len(node.world.calls("resize2fs"))  # the ext4 filesystem was grown online
    world.sim.wait_idle()
    pvc = world.pvc("data")
    assert pvc is not None
    assert {"storage": "3Gi"} == pvc["status"]["capacity"]
    assert [] == conditions(pvc)
    kubelet.unmount()
    reasons = [(t, r) for t, r, _ in events(world, "data")]
    assert ("Normal", "Resizing") in reasons
    assert ("Normal", "FileSystemResizeRequired") in reasons
    assert [] == [r for t, r in reasons if t == "Warning"]
    assert 1 == cinder_calls(world, "extend_volume")  # the kubelet's writes started nothing new


def test_shrink_is_refused_with_a_warning_and_no_cinder_call(world: World) -> None:
    """After 1 → 3 Gi (node step pending), lowering to 2 Gi: a Warning naming the field, no second extend."""
    world.start_replica()
    expandable_class(world)
    world.create_pvc("data", "grow", size="1Gi")
    world.wait_bound("data")
    resize(world, "data", "3Gi")
    wait_for(
        lambda: "FileSystemResizePending" in conditions(world.pvc("data")), 20, "FileSystemResizePending"
    )
    resize(world, "data", "2Gi")  # allowed by the API: still above status.capacity (recovery)
    wait_for(
        lambda: any(r == "VolumeResizeFailed" for _, r, _ in events(world, "data")), 20, "shrink Warning"
    )
    warning = next(m for t, r, m in events(world, "data") if r == "VolumeResizeFailed")
    assert "spec.resources.requests.storage" in warning
    assert "cannot shrink" in warning
    pv = world.pv_of("data")
    assert pv is not None
    assert {"storage": "3Gi"} == pv["spec"]["capacity"]
    assert 1 == cinder_calls(world, "extend_volume")
    assert 3 == world.our_volumes()[0].size_gib


def test_class_without_expansion_refuses_in_the_api_and_the_controller(world: World) -> None:
    """Growing a claim whose class does not allow it: the API server refuses the edit (403), no extend."""
    world.start_replica()
    expandable_class(world, "fixed", allow=False)
    world.create_pvc("data", "fixed", size="1Gi")
    world.wait_bound("data")
    with pytest.raises(KubeError) as refused:
        resize(world, "data", "2Gi")
    assert 403 == refused.value.status_code
    assert "must support resize" in str(refused.value)
    assert 0 == cinder_calls(world, "extend_volume")


@pytest.fixture
def legacy_world() -> Iterator[World]:
    """A cloud whose newest microversion is 3.40: legacy export, no in-use extend."""
    with emulator_world(max_version="3.40") as w:
        yield w


def test_offline_expand_waits_for_a_detached_volume(legacy_world: World) -> None:
    """No in-use extend: a Warning to stop the pods, slow retries, then the extend once detached."""
    world = legacy_world
    world.start_replica(final_retry_seconds=1.5)
    expandable_class(world)
    world.create_pvc("data", "grow", size="1Gi")
    world.wait_bound("data")
    resize(world, "data", "2Gi")
    wait_for(
        lambda: any(r == "VolumeResizeFailed" for _, r, _ in events(world, "data")), 20, "offline Warning"
    )
    warning = next(m for t, r, m in events(world, "data") if r == "VolumeResizeFailed")
    assert "microversion 3.40" in warning
    assert "stop the pods" in warning
    assert 0 == cinder_calls(world, "extend_volume")
    # The pods stop and the volume is detached (what an attach-time export does; here by hand).
    volume = world.our_volumes()[0]
    world.cinder.terminate_connection(volume.id, world.replicas[0].controller.ctx.settings.connector)
    world.cinder.unreserve(volume.id)
    wait_for(lambda: "FileSystemResizePending" in conditions(world.pvc("data")), 20, "resized offline")
    assert 1 == cinder_calls(world, "extend_volume")
    assert 2 == world.cinder.get_volume(volume.id).size_gib
    pv = world.pv_of("data")
    assert pv is not None
    assert {"storage": "2Gi"} == pv["spec"]["capacity"]
    assert names.CSI_DRIVER_NAME == pv["spec"]["csi"]["driver"]


def test_failed_extend_leaves_the_claim_consistent_and_says_why(world: World) -> None:
    """Cinder answers 413 to the extend: Warning with Cinder's reason, Resizing gone, infeasible marked,
    PV, claim capacity and volume at the old size; no second extend until the claim changes."""
    world.start_replica()
    expandable_class(world)
    world.create_pvc("data", "grow", size="1Gi")
    world.wait_bound("data")
    world.emu.faults.fail_next(
        "extend_volume", status=413, count=1, message="VolumeSizeExceedsAvailableQuota"
    )
    resize(world, "data", "5Gi")
    wait_for(
        lambda: (
            (((world.pvc("data") or {}).get("status") or {}).get("allocatedResourceStatuses") or {}).get(
                "storage"
            )
            == "ControllerResizeInfeasible"
        ),
        20,
        "ControllerResizeInfeasible",
    )
    pvc, pv = world.pvc("data"), world.pv_of("data")
    assert pvc is not None
    assert pv is not None
    assert [] == conditions(pvc)
    assert {"storage": "1Gi"} == pvc["status"]["capacity"] == pv["spec"]["capacity"]
    assert 1 == world.our_volumes()[0].size_gib
    warning = next(m for t, r, m in events(world, "data") if t == "Warning" and r == "VolumeResizeFailed")
    assert "VolumeSizeExceedsAvailableQuota" in warning
    assert "stays at 1 GiB" in warning
    assert 1 == cinder_calls(world, "extend_volume")
