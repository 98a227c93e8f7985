"""The simulator's common snapshot-controller, through the official client: it binds, protects, mirrors and
runs the deletion protocol, but never cuts a snapshot or invents a handle (that is the driver's sidecar)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from provisioner.testworld.kube_sim import KubeSimulator
from provisioner.testworld.kube_sim.snapshots import (
    ANN_BEING_DELETED,
    CONTENT_FINALIZER,
    PVC_SOURCE_FINALIZER,
    VS_BOUND_FINALIZER,
    VS_SOURCE_FINALIZER,
)
from tests.integration.kube_sim.bodies import pv_body, pvc_body, storage_class_body

SNAP = ("snapshot.storage.k8s.io", "v1")
DRIVER = "cinder.netvol.io"
SIDECAR_FINALIZER = "netvol.io/cinder-snapshot"


def _bound_claim(sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api, **pv: Any) -> None:
    storage.create_storage_class(storage_class_body())
    pvc = core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    body = pv_body("pv1", claim=("default", "c", pvc.metadata.uid), handle="cinder-vol-1")
    body["spec"].update(pv)
    core.create_persistent_volume(body)
    sim.wait_idle()


def _class(
    custom: client.CustomObjectsApi, name: str = "snaps", *, policy: str = "Delete", **meta: Any
) -> None:
    custom.create_cluster_custom_object(
        *SNAP,
        "volumesnapshotclasses",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {"name": name, **meta},
            "driver": DRIVER,
            "deletionPolicy": policy,
        },
    )


def _snapshot(custom: client.CustomObjectsApi, source: dict[str, str], cls: str | None = "snaps") -> None:
    spec: dict[str, Any] = {"source": source}
    if cls:
        spec["volumeSnapshotClassName"] = cls
    custom.create_namespaced_custom_object(
        *SNAP,
        "default",
        "volumesnapshots",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": "s"},
            "spec": spec,
        },
    )


def _vs(sim: KubeSimulator) -> dict[str, Any]:
    return sim.get("volumesnapshots", "default", "s") or {}


def _content(sim: KubeSimulator) -> dict[str, Any]:
    name = (_vs(sim).get("status") or {}).get("boundVolumeSnapshotContentName", "")
    return sim.get("volumesnapshotcontents", "", name) or {}


def _sidecar_status(custom: client.CustomObjectsApi, name: str, status: dict[str, Any]) -> None:
    """What a CSI snapshotter does once its snapshot is cut."""
    custom.patch_cluster_custom_object_status(*SNAP, "volumesnapshotcontents", name, {"status": status})


@pytest.fixture
def dynamic(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api, custom: client.CustomObjectsApi
) -> KubeSimulator:
    _bound_claim(sim, core, storage)
    _class(custom)
    _snapshot(custom, {"persistentVolumeClaimName": "c"})
    sim.wait_idle()
    return sim


def test_dynamic_snapshot_gets_a_content_but_no_invented_handle(dynamic: KubeSimulator) -> None:
    """Content with the class driver/policy, the PV's volumeHandle, the ref; finalizers; no status."""
    sim = dynamic
    vs, content = _vs(sim), _content(sim)
    assert f"snapcontent-{vs['metadata']['uid']}" == content["metadata"]["name"]
    assert (DRIVER, {"volumeHandle": "cinder-vol-1"}, "Delete", "snaps") == (
        content["spec"]["driver"],
        content["spec"]["source"],
        content["spec"]["deletionPolicy"],
        content["spec"]["volumeSnapshotClassName"],
    )
    assert ("s", "default", vs["metadata"]["uid"]) == tuple(
        content["spec"]["volumeSnapshotRef"][k] for k in ("name", "namespace", "uid")
    )
    assert [CONTENT_FINALIZER] == content["metadata"]["finalizers"]
    assert {VS_SOURCE_FINALIZER, VS_BOUND_FINALIZER} == set(vs["metadata"]["finalizers"])
    assert PVC_SOURCE_FINALIZER in sim.get("persistentvolumeclaims", "default", "c")["metadata"]["finalizers"]
    assert "status" not in content
    assert (False, None) == (vs["status"]["readyToUse"], vs["status"].get("error"))


def test_snapshot_mirrors_what_the_sidecar_sets(
    dynamic: KubeSimulator, custom: client.CustomObjectsApi
) -> None:
    """readyToUse, restoreSize (bytes → quantity), creationTime (ns → RFC 3339); the claim is released."""
    sim = dynamic
    name = _content(sim)["metadata"]["name"]
    status = {
        "snapshotHandle": "h-1",
        "readyToUse": True,
        "restoreSize": 2**30,
        "creationTime": 1767225600 * 10**9,
    }
    _sidecar_status(custom, name, status)
    sim.wait_idle()
    vs = _vs(sim)
    assert (True, "1Gi", "2026-01-01T00:00:00Z") == (
        vs["status"]["readyToUse"],
        vs["status"]["restoreSize"],
        vs["status"]["creationTime"],
    )
    assert (
        PVC_SOURCE_FINALIZER
        not in (sim.get("persistentvolumeclaims", "default", "c")["metadata"]["finalizers"])
    )
    reasons = [e["reason"] for e in sim.list("events") if e["involvedObject"]["name"] == "s"]
    assert ["CreatingSnapshot", "SnapshotReady"] == sorted(reasons)


def test_sidecar_error_reaches_the_snapshot(dynamic: KubeSimulator, custom: client.CustomObjectsApi) -> None:
    """A content status.error is mirrored onto the VolumeSnapshot (what kubectl describe shows)."""
    sim = dynamic
    error = {"message": "Cinder snapshot x went to status error", "time": "2026-01-01T00:00:00Z"}
    _sidecar_status(custom, _content(sim)["metadata"]["name"], {"readyToUse": False, "error": error})
    sim.wait_idle()
    assert (False, error) == (_vs(sim)["status"]["readyToUse"], _vs(sim)["status"]["error"])


def test_delete_policy_deletion_protocol(dynamic: KubeSimulator, custom: client.CustomObjectsApi) -> None:
    """Delete: content annotated being-deleted and deleted; the snapshot waits until the content is gone."""
    sim = dynamic
    name = _content(sim)["metadata"]["name"]
    custom.patch_cluster_custom_object(
        *SNAP,
        "volumesnapshotcontents",
        name,
        {"metadata": {"finalizers": [CONTENT_FINALIZER, SIDECAR_FINALIZER]}},
    )
    custom.delete_namespaced_custom_object(*SNAP, "default", "volumesnapshots", "s")
    sim.wait_idle()
    content = sim.get("volumesnapshotcontents", "", name)
    assert content is not None
    assert ("yes", [SIDECAR_FINALIZER]) == (
        content["metadata"]["annotations"][ANN_BEING_DELETED],
        content["metadata"]["finalizers"],
    )
    assert content["metadata"]["deletionTimestamp"]
    assert [VS_BOUND_FINALIZER] == _vs(sim)["metadata"]["finalizers"]
    # the sidecar gave its snapshot back and drops its finalizer: content, then snapshot go
    custom.patch_cluster_custom_object(
        *SNAP, "volumesnapshotcontents", name, {"metadata": {"finalizers": []}}
    )
    sim.wait_idle()
    assert (None, None) == (
        sim.get("volumesnapshotcontents", "", name),
        sim.get("volumesnapshots", "default", "s"),
    )


def test_retain_policy_keeps_the_content(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api, custom: client.CustomObjectsApi
) -> None:
    """Retain: the snapshot goes at once; the content stays, not annotated, not deleted."""
    _bound_claim(sim, core, storage)
    _class(custom, policy="Retain")
    _snapshot(custom, {"persistentVolumeClaimName": "c"})
    sim.wait_idle()
    name = _content(sim)["metadata"]["name"]
    custom.delete_namespaced_custom_object(*SNAP, "default", "volumesnapshots", "s")
    sim.wait_idle()
    content = sim.get("volumesnapshotcontents", "", name)
    assert content is not None
    assert (None, None) == (
        sim.get("volumesnapshots", "default", "s"),
        content["metadata"].get("deletionTimestamp"),
    )
    assert ANN_BEING_DELETED not in (content["metadata"].get("annotations") or {})


def test_deletion_waits_while_a_claim_restores_from_it(
    dynamic: KubeSimulator, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    """A Pending claim with the snapshot as dataSource keeps it (as-source protection)."""
    sim = dynamic
    body = pvc_body("restore")
    body["spec"]["dataSource"] = {
        "kind": "VolumeSnapshot",
        "name": "s",
        "apiGroup": "snapshot.storage.k8s.io",
    }
    core.create_namespaced_persistent_volume_claim("default", body)
    custom.delete_namespaced_custom_object(*SNAP, "default", "volumesnapshots", "s")
    sim.wait_idle()
    vs = _vs(sim)
    assert VS_SOURCE_FINALIZER in vs["metadata"]["finalizers"]
    assert ANN_BEING_DELETED not in (_content(sim)["metadata"].get("annotations") or {})
    content = vs["status"]["boundVolumeSnapshotContentName"]
    core.delete_namespaced_persistent_volume_claim("restore", "default")  # the restore is off: go on
    sim.wait_idle()
    assert (None, None) == (
        sim.get("volumesnapshots", "default", "s"),
        sim.get("volumesnapshotcontents", "", content),
    )


def test_pre_provisioned_snapshot_binds_without_a_handle_from_the_controller(
    sim: KubeSimulator, custom: client.CustomObjectsApi
) -> None:
    """The content's ref gets the snapshot's uid and both get finalizers; readiness is the sidecar's."""
    custom.create_cluster_custom_object(
        *SNAP,
        "volumesnapshotcontents",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": "pre"},
            "spec": {
                "driver": DRIVER,
                "deletionPolicy": "Retain",
                "source": {"snapshotHandle": "cinder-snap-9"},
                "volumeSnapshotRef": {"name": "s", "namespace": "default"},
            },
        },
    )
    _snapshot(custom, {"volumeSnapshotContentName": "pre"}, cls=None)
    sim.wait_idle()
    vs, content = _vs(sim), sim.get("volumesnapshotcontents", "", "pre") or {}
    assert ("pre", False, vs["metadata"]["uid"]) == (
        vs["status"]["boundVolumeSnapshotContentName"],
        vs["status"]["readyToUse"],
        content["spec"]["volumeSnapshotRef"]["uid"],
    )
    assert ([CONTENT_FINALIZER], None) == (content["metadata"]["finalizers"], content.get("status"))


def test_default_class_of_the_volumes_driver(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api, custom: client.CustomObjectsApi
) -> None:
    """No class named: the default class whose driver is the PV's CSI driver."""
    _bound_claim(sim, core, storage)
    _class(custom, "dflt", annotations={"snapshot.storage.kubernetes.io/is-default-class": "true"})
    _snapshot(custom, {"persistentVolumeClaimName": "c"}, cls=None)
    sim.wait_idle()
    assert "dflt" == _content(sim)["spec"]["volumeSnapshotClassName"]


def test_snapshot_of_in_tree_pv_fails(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api, custom: client.CustomObjectsApi
) -> None:
    """In-tree (non-CSI) PVs cannot be snapshotted: status.error, a Warning, no content."""
    storage.create_storage_class(storage_class_body())
    pvc = core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    body = pv_body("pv1", claim=("default", "c", pvc.metadata.uid))
    body["spec"].pop("csi")
    body["spec"]["rbd"] = {"monitors": ["1.2.3.4:6789"], "image": "img", "pool": "rbd"}
    core.create_persistent_volume(body)
    _class(custom)
    sim.wait_idle()
    _snapshot(custom, {"persistentVolumeClaimName": "c"})
    sim.wait_idle()
    vs = _vs(sim)
    assert (False, []) == (vs["status"]["readyToUse"], sim.list("volumesnapshotcontents"))
    assert 'the PersistentVolume bound to "c" is not a CSI volume' == vs["status"]["error"]["message"]
    warnings = [e["reason"] for e in sim.list("events") if e["type"] == "Warning"]
    assert ["SnapshotCreationFailed"] == warnings
