"""PATCH flavours: merge, strategic merge (finalizers as a set), JSON patch with test, RV preconditions."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.kube_sim.bodies import pv_body

SNAP = ("snapshot.storage.k8s.io", "v1")


def _pv_with_finalizers(core: client.CoreV1Api, *finalizers: str) -> client.V1PersistentVolume:
    body = pv_body("pv1")
    body["metadata"]["finalizers"] = list(finalizers)
    return core.create_persistent_volume(body)


def test_strategic_merge_adds_finalizer_as_set(core: client.CoreV1Api) -> None:
    """A strategic-merge patch (the client's default for dict bodies) merges finalizers as a set."""
    _pv_with_finalizers(core, "a.io/one")
    patched = core.patch_persistent_volume("pv1", {"metadata": {"finalizers": ["b.io/two", "a.io/one"]}})
    assert ["a.io/one", "b.io/two", "kubernetes.io/pv-protection"] == sorted(patched.metadata.finalizers)


def test_strategic_merge_delete_from_primitive_list(core: client.CoreV1Api) -> None:
    """$deleteFromPrimitiveList/finalizers removes entries and keeps the rest."""
    _pv_with_finalizers(core, "a.io/one", "b.io/two")
    patched = core.patch_persistent_volume(
        "pv1", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/one"]}}
    )
    assert ["b.io/two", "kubernetes.io/pv-protection"] == sorted(patched.metadata.finalizers)


def test_merge_patch_replaces_finalizers(core: client.CoreV1Api) -> None:
    """A JSON merge patch replaces the finalizers list whole and null deletes annotations."""
    _pv_with_finalizers(core, "a.io/one")
    core.patch_persistent_volume("pv1", {"metadata": {"annotations": {"x": "1", "y": "2"}}})
    patched = core.patch_persistent_volume(
        "pv1",
        {"metadata": {"finalizers": ["b.io/two"], "annotations": {"x": None}}},
        _content_type="application/merge-patch+json",
    )
    assert (["b.io/two"], {"y": "2"}) == (patched.metadata.finalizers, patched.metadata.annotations)


def test_strategic_merge_owner_references_merge_by_uid(core: client.CoreV1Api) -> None:
    """ownerReferences merge by uid under strategic merge."""
    pv = core.create_persistent_volume(pv_body("owner"))
    ref = {"apiVersion": "v1", "kind": "PersistentVolume", "name": "owner", "uid": pv.metadata.uid}
    core.create_namespaced_secret("default", {"metadata": {"name": "s", "labels": {"a": "b"}}})
    patched = core.patch_namespaced_secret("s", "default", {"metadata": {"ownerReferences": [ref]}})
    assert [pv.metadata.uid] == [r.uid for r in patched.metadata.owner_references]


def test_json_patch_test_op_guards_removal(core: client.CoreV1Api) -> None:
    """A JSON patch whose test op fails is 422 and changes nothing; a passing one applies."""
    _pv_with_finalizers(core, "a.io/one")
    stale = [
        {"op": "test", "path": "/metadata/finalizers/0", "value": "other"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    with pytest.raises(ApiException) as e:
        core.patch_persistent_volume("pv1", stale)
    good = [
        {"op": "test", "path": "/metadata/finalizers/0", "value": "a.io/one"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    patched = core.patch_persistent_volume("pv1", good)
    assert 422 == e.value.status
    assert ["kubernetes.io/pv-protection"] == patched.metadata.finalizers


def test_json_patch_add_replace(core: client.CoreV1Api) -> None:
    """JSON patch add (with ~1 escaping) and replace work on nested paths."""
    core.create_persistent_volume(pv_body("pv1"))
    patched = core.patch_persistent_volume(
        "pv1",
        [
            {"op": "add", "path": "/metadata/annotations", "value": {}},
            {"op": "add", "path": "/metadata/annotations/netvol.io~1step", "value": "create"},
            {"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Retain"},
        ],
    )
    assert ({"netvol.io/step": "create"}, "Retain") == (
        patched.metadata.annotations,
        patched.spec.persistent_volume_reclaim_policy,
    )


def test_resource_version_in_patch_is_precondition(core: client.CoreV1Api) -> None:
    """A patch carrying a stale metadata.resourceVersion is 409; the current one applies."""
    pv = core.create_persistent_volume(pv_body("pv1"))
    core.patch_persistent_volume("pv1", {"metadata": {"labels": {"a": "1"}}})
    with pytest.raises(ApiException) as e:
        core.patch_persistent_volume(
            "pv1", {"metadata": {"resourceVersion": pv.metadata.resource_version, "labels": {"a": "2"}}}
        )
    current = core.read_persistent_volume("pv1").metadata.resource_version
    ok = core.patch_persistent_volume("pv1", {"metadata": {"resourceVersion": current, "labels": {"a": "3"}}})
    assert (409, {"a": "3"}) == (e.value.status, ok.metadata.labels)


def test_status_patch_changes_only_status(core: client.CoreV1Api) -> None:
    """Patching /status ignores spec changes in the same patch."""
    core.create_persistent_volume(pv_body("pv1"))
    patched = core.patch_persistent_volume_status(
        "pv1", {"status": {"message": "m"}, "spec": {"persistentVolumeReclaimPolicy": "Retain"}}
    )
    assert ("m", "Delete") == (patched.status.message, patched.spec.persistent_volume_reclaim_policy)


def test_strategic_merge_on_custom_resource_is_415(custom: client.CustomObjectsApi) -> None:
    """Custom resources reject strategic-merge patches with 415 and accept merge patches."""
    body = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": "c"},
        "driver": "cinder.netvol.io",
        "deletionPolicy": "Delete",
    }
    custom.create_cluster_custom_object(*SNAP, "volumesnapshotclasses", body)
    with pytest.raises(ApiException) as e:
        custom.patch_cluster_custom_object(
            *SNAP,
            "volumesnapshotclasses",
            "c",
            {"deletionPolicy": "Retain"},
            _content_type="application/strategic-merge-patch+json",
        )
    merged = custom.patch_cluster_custom_object(
        *SNAP, "volumesnapshotclasses", "c", {"deletionPolicy": "Retain"}
    )
    assert 415 == e.value.status
    assert "Retain" == merged["deletionPolicy"]


def test_patch_missing_object_is_404(core: client.CoreV1Api) -> None:
    """Patching a missing object is 404."""
    with pytest.raises(ApiException) as e:
        core.patch_persistent_volume("nope", {"metadata": {"labels": {"a": "b"}}})
    assert "NotFound" == json.loads(e.value.body)["reason"]
