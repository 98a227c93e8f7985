"""Cluster behaviours: PV controller handshake and binding, Released/Lost, protection (snapshots:
test_snapshot_controller.py)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from provisioner.testworld.kube_sim import KubeSimulator
from tests.integration.kube_sim.bodies import pv_body, pvc_body, storage_class_body

PROVISIONER_ANNS = (
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
)


def _claim(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api, **kw: Any
) -> client.V1PersistentVolumeClaim:
    storage.create_storage_class(storage_class_body(**kw))
    pvc = core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    sim.wait_idle()
    return pvc


def _anns(sim: KubeSimulator, resource: str, ns: str, name: str) -> dict[str, str]:
    obj = sim.get(resource, ns, name)
    assert obj is not None
    anns: dict[str, str] = obj["metadata"].get("annotations") or {}
    return anns


def test_handshake_annotations_and_event(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """An unbound PVC with an external class gets both provisioner annotations and one event."""
    _claim(sim, core, storage)
    anns = _anns(sim, "pvc", "default", "c")
    events = core.list_namespaced_event("default", field_selector="involvedObject.name=c").items
    assert ["netvol.io/cinder"] * 2 == [anns.get(a) for a in PROVISIONER_ANNS]
    assert [("ExternalProvisioning", "Normal", "persistentvolume-controller")] == [
        (e.reason, e.type, e.source.component) for e in events
    ]


def test_wait_for_first_consumer_waits_for_selected_node(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """WaitForFirstConsumer: no handshake until volume.kubernetes.io/selected-node is set."""
    _claim(sim, core, storage, wait_for_consumer=True)
    before = _anns(sim, "pvc", "default", "c")
    core.patch_namespaced_persistent_volume_claim(
        "c", "default", {"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}}}
    )
    sim.wait_idle()
    after = _anns(sim, "pvc", "default", "c")
    assert [None, None] == [before.get(a) for a in PROVISIONER_ANNS]
    assert ["netvol.io/cinder"] * 2 == [after.get(a) for a in PROVISIONER_ANNS]


def test_pre_bound_pv_binds_both_sides(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """A PV whose claimRef names the PVC (uid too) binds: volumeName, phases, capacity, bind-completed."""
    pvc = _claim(sim, core, storage)
    core.create_persistent_volume(pv_body("pv1", claim=("default", "c", pvc.metadata.uid)))
    sim.wait_idle()
    claim = core.read_namespaced_persistent_volume_claim("c", "default")
    volume = core.read_persistent_volume("pv1")
    assert ("pv1", "Bound", "Bound") == (claim.spec.volume_name, claim.status.phase, volume.status.phase)
    assert ({"storage": "1Gi"}, ["ReadWriteOnce"]) == (claim.status.capacity, claim.status.access_modes)
    assert "yes" == claim.metadata.annotations["pv.kubernetes.io/bind-completed"]


def test_claim_ref_uid_mismatch_never_binds(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """A PV whose claimRef uid is not the live PVC's is not bound to it (it is Released)."""
    _claim(sim, core, storage)
    core.create_persistent_volume(
        pv_body("pv1", claim=("default", "c", "11111111-1111-1111-1111-111111111111"))
    )
    sim.wait_idle()
    claim = core.read_namespaced_persistent_volume_claim("c", "default")
    assert (None, "Pending", "Released") == (
        claim.spec.volume_name,
        claim.status.phase,
        core.read_persistent_volume("pv1").status.phase,
    )


def test_pv_without_claim_is_available(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """A PV without claimRef becomes Available."""
    core.create_persistent_volume(pv_body("pv1"))
    sim.wait_idle()
    assert "Available" == core.read_persistent_volume("pv1").status.phase


def test_claim_deleted_releases_pv_and_protection_lets_go(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """Deleting a bound claim removes it (protection lifted); the PV is Released with claimRef kept."""
    pvc = _claim(sim, core, storage)
    core.create_persistent_volume(pv_body("pv1", claim=("default", "c", pvc.metadata.uid)))
    sim.wait_idle()
    core.delete_namespaced_persistent_volume_claim("c", "default")
    sim.wait_idle()
    pv = core.read_persistent_volume("pv1")
    assert (None, "Released", pvc.metadata.uid) == (
        sim.get("pvc", "default", "c"),
        pv.status.phase,
        pv.spec.claim_ref.uid,
    )


def test_protection_finalizers_added_at_creation(
    core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """PVCs get kubernetes.io/pvc-protection and PVs kubernetes.io/pv-protection at creation."""
    storage.create_storage_class(storage_class_body())
    pvc = core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    pv = core.create_persistent_volume(pv_body("pv1"))
    assert (["kubernetes.io/pvc-protection"], ["kubernetes.io/pv-protection"]) == (
        pvc.metadata.finalizers,
        pv.metadata.finalizers,
    )


def test_pvc_protection_waits_for_pods(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """A claim used by a running pod stays until the pod is gone."""
    _claim(sim, core, storage)
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "c", "image": "x"}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}],
            },
        },
    )
    core.delete_namespaced_persistent_volume_claim("c", "default")
    sim.wait_idle()
    held = sim.get("pvc", "default", "c")
    core.delete_namespaced_pod("p", "default")
    sim.wait_idle()
    assert held is not None
    assert None is sim.get("pvc", "default", "c")


def test_pv_protection_holds_bound_pv(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """A bound PV being deleted stays until its claim is gone, then disappears."""
    pvc = _claim(sim, core, storage)
    core.create_persistent_volume(pv_body("pv1", claim=("default", "c", pvc.metadata.uid)))
    sim.wait_idle()
    core.delete_persistent_volume("pv1")
    sim.wait_idle()
    held = sim.get("pv", "", "pv1")
    core.delete_namespaced_persistent_volume_claim("c", "default")
    sim.wait_idle()
    assert held is not None
    assert None is sim.get("pv", "", "pv1")


def test_claim_whose_pv_vanished_is_lost(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """A Bound claim whose PV is deleted becomes Lost (spec.volumeName kept)."""
    pvc = _claim(sim, core, storage)
    core.create_persistent_volume(pv_body("pv1", claim=("default", "c", pvc.metadata.uid)))
    sim.wait_idle()
    core.patch_persistent_volume(
        "pv1", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["kubernetes.io/pv-protection"]}}
    )
    core.delete_persistent_volume("pv1")
    sim.wait_idle()
    claim = core.read_namespaced_persistent_volume_claim("c", "default")
    assert ("Lost", "pv1") == (claim.status.phase, claim.spec.volume_name)


def test_default_storage_class_is_assigned(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """A claim without storageClassName gets the default class at admission."""
    body = storage_class_body("std")
    body["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    storage.create_storage_class(body)
    pvc = core.create_namespaced_persistent_volume_claim("default", pvc_body("c", storage_class=None))
    assert "std" == pvc.spec.storage_class_name


def test_controllers_can_be_switched_off() -> None:
    """controllers=False: no finalizers, no annotations, no binding."""
    with KubeSimulator(controllers=False) as sim, sim.api_client() as api:
        core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
        storage.create_storage_class(storage_class_body())
        pvc = core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
        sim.wait_idle()
        assert (None, None, "Pending") == (
            pvc.metadata.finalizers,
            _anns(sim, "pvc", "default", "c").get(PROVISIONER_ANNS[0]),
            core.read_namespaced_persistent_volume_claim("c", "default").status.phase,
        )


def test_unknown_controller_name_is_rejected() -> None:
    """A typo in controllers= is an error, not a silently disabled behaviour."""
    with pytest.raises(ValueError, match="unknown simulator controllers"):
        KubeSimulator(controllers=["pv-bidner"])
