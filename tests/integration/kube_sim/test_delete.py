"""Deletion: finalizers and deletionTimestamp, preconditions, return bodies, garbage collection."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provisioner.testworld.kube_sim import KubeSimulator
from tests.integration.kube_sim.bodies import pv_body


def test_delete_with_finalizer_sets_deletion_timestamp(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """DELETE with finalizers answers 200 with deletionTimestamp; the object stays until they are gone."""
    core.create_namespaced_secret("default", {"metadata": {"name": "s", "finalizers": ["netvol.io/x"]}})
    deleted = core.delete_namespaced_secret("s", "default")
    still = core.read_namespaced_secret("s", "default")
    assert deleted["metadata"]["deletionTimestamp"] is not None
    assert (0, ["netvol.io/x"]) == (still.metadata.deletion_grace_period_seconds, still.metadata.finalizers)
    core.patch_namespaced_secret(
        "s", "default", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["netvol.io/x"]}}
    )
    assert None is sim.get("secrets", "default", "s")


def test_no_new_finalizers_after_deletion(core: client.CoreV1Api) -> None:
    """Once deletionTimestamp is set, adding a finalizer is 422."""
    core.create_namespaced_secret("default", {"metadata": {"name": "s", "finalizers": ["netvol.io/x"]}})
    core.delete_namespaced_secret("s", "default")
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_secret("s", "default", {"metadata": {"finalizers": ["netvol.io/y"]}})
    assert 422 == e.value.status


def test_deletion_timestamp_never_clears(core: client.CoreV1Api) -> None:
    """A PUT without deletionTimestamp does not clear it."""
    core.create_namespaced_secret("default", {"metadata": {"name": "s", "finalizers": ["netvol.io/x"]}})
    core.delete_namespaced_secret("s", "default")
    obj = core.read_namespaced_secret("s", "default")
    obj.metadata.deletion_timestamp = None
    obj.metadata.labels = {"a": "b"}
    assert None is not core.replace_namespaced_secret("s", "default", obj).metadata.deletion_timestamp


def test_delete_without_finalizers_returns_status_or_object(core: client.CoreV1Api) -> None:
    """Secrets answer a Success Status; PVs (returns-deleted-object kinds) answer the object."""
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    core.create_persistent_volume(pv_body("pv1"))
    core.patch_persistent_volume(
        "pv1", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["kubernetes.io/pv-protection"]}}
    )
    status = core.delete_namespaced_secret("s", "default")
    pv = core.delete_persistent_volume("pv1")
    assert ("Status", "Success") == (status["kind"], status["status"])
    assert "pv1" == pv.metadata.name


@pytest.mark.parametrize("field", ["uid", "resourceVersion"])
def test_delete_preconditions(core: client.CoreV1Api, field: str) -> None:
    """DeleteOptions preconditions that do not match are 409 and the object stays."""
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    body = client.V1DeleteOptions(preconditions={field: "0"})
    with pytest.raises(ApiException) as e:
        core.delete_namespaced_secret("s", "default", body=body)
    assert 409 == e.value.status
    assert "s" == core.read_namespaced_secret("s", "default").metadata.name


def test_matching_uid_precondition_deletes(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """A matching uid precondition deletes."""
    s = core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    core.delete_namespaced_secret(
        "s", "default", body=client.V1DeleteOptions(preconditions={"uid": s.metadata.uid})
    )
    assert None is sim.get("secrets", "default", "s")


def _owned_secret(
    core: client.CoreV1Api, owner: client.V1PersistentVolume, name: str = "s", block: bool = False
) -> None:
    ref = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "blockOwnerDeletion": block,
    }
    core.create_namespaced_secret("kube-system", {"metadata": {"name": name, "ownerReferences": [ref]}})


def _unprotected_pv(core: client.CoreV1Api, name: str = "pv1") -> client.V1PersistentVolume:
    core.create_persistent_volume(pv_body(name))
    return core.patch_persistent_volume(
        name, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["kubernetes.io/pv-protection"]}}
    )


def test_gc_deletes_secret_owned_by_pv(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """Background GC deletes a namespaced Secret once its cluster-scoped owner PV is gone."""
    pv = _unprotected_pv(core)
    _owned_secret(core, pv)
    sim.wait_idle()
    assert None is not sim.get("secrets", "kube-system", "s")
    core.delete_persistent_volume("pv1")
    sim.wait_idle()
    assert None is sim.get("secrets", "kube-system", "s")


def test_gc_waits_for_owner_finalizers(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """A dependent survives while its owner is only marked for deletion."""
    pv = core.create_persistent_volume(pv_body("pv1"))
    core.patch_persistent_volume("pv1", {"metadata": {"finalizers": ["netvol.io/cinder-volume"]}})
    _owned_secret(core, pv)
    core.delete_persistent_volume("pv1")
    sim.wait_idle()
    assert None is not sim.get("secrets", "kube-system", "s")
    core.patch_persistent_volume(
        "pv1", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["netvol.io/cinder-volume"]}}
    )
    sim.wait_idle()
    assert (None, None) == (sim.get("pv", "", "pv1"), sim.get("secrets", "kube-system", "s"))


def test_gc_deletes_dependent_of_missing_owner(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """A dependent created with an owner uid that does not exist is collected."""
    ghost = client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name="ghost", uid="00000000-0000-0000-0000-000000000000")
    )
    _owned_secret(core, ghost)
    sim.wait_idle()
    assert None is sim.get("secrets", "kube-system", "s")


def test_foreground_deletion_waits_for_blocking_dependents(
    sim: KubeSimulator, core: client.CoreV1Api
) -> None:
    """Foreground: the owner keeps foregroundDeletion until blocking dependents are gone."""
    pv = _unprotected_pv(core)
    core.create_namespaced_secret(
        "kube-system",
        {
            "metadata": {
                "name": "s",
                "finalizers": ["netvol.io/hold"],
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolume",
                        "name": "pv1",
                        "uid": pv.metadata.uid,
                        "blockOwnerDeletion": True,
                    }
                ],
            }
        },
    )
    core.delete_persistent_volume("pv1", propagation_policy="Foreground")
    sim.wait_idle()
    owner = sim.get("pv", "", "pv1")
    assert owner is not None
    assert ["foregroundDeletion"] == owner["metadata"]["finalizers"]
    core.patch_namespaced_secret(
        "s", "kube-system", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["netvol.io/hold"]}}
    )
    sim.wait_idle()
    assert (None, None) == (sim.get("pv", "", "pv1"), sim.get("secrets", "kube-system", "s"))


def test_orphan_deletion_keeps_dependents(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """Orphan: dependents lose the ownerReference and survive the owner."""
    pv = _unprotected_pv(core)
    _owned_secret(core, pv)
    core.delete_persistent_volume("pv1", propagation_policy="Orphan")
    sim.wait_idle()
    secret = sim.get("secrets", "kube-system", "s")
    assert None is sim.get("pv", "", "pv1")
    assert secret is not None
    assert None is secret["metadata"].get("ownerReferences")


def test_namespace_deletion_deletes_its_objects(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """Deleting a namespace deletes the objects in it."""
    core.create_namespace({"metadata": {"name": "tmp"}})
    core.create_namespaced_secret("tmp", {"metadata": {"name": "s"}})
    core.delete_namespace("tmp")
    sim.wait_idle()
    assert [] == sim.list("secrets", "tmp")
