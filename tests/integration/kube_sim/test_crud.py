"""Create / read / update semantics: uid, resourceVersion, generation, status subresource, error codes."""

from __future__ import annotations

import re

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provisioner.testworld.kube_sim import KubeSimulator
from tests.integration.kube_sim.bodies import pv_body, pvc_body, storage_class_body


def test_create_returns_201_with_server_fields(core: client.CoreV1Api) -> None:
    """Create answers 201 with uid, RFC 3339 creationTimestamp, resourceVersion and generation 1."""
    data, status, _headers = core.create_namespaced_secret_with_http_info(
        "default", {"metadata": {"name": "s2"}}
    )
    assert 201 == status
    meta = data.metadata
    assert re.fullmatch(r"[0-9a-f-]{36}", meta.uid)
    assert meta.resource_version.isdigit()
    assert 1 == meta.generation
    assert meta.creation_timestamp is not None
    assert "Opaque" == data.type


def test_creation_timestamp_is_rfc3339_seconds(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """creationTimestamp is RFC 3339 with seconds and Z, as metav1.Time."""
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    stamp = sim.get("configmaps", "default", "cm")["metadata"]["creationTimestamp"]  # type: ignore[index]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)


def test_resource_version_increases_cluster_wide(core: client.CoreV1Api) -> None:
    """Writes to different kinds share one increasing resourceVersion."""
    a = core.create_namespaced_secret("default", {"metadata": {"name": "a"}})
    b = core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    c = core.create_namespaced_secret("default", {"metadata": {"name": "c"}})
    rvs = [int(o.metadata.resource_version) for o in (a, b, c)]
    assert sorted(rvs) == rvs
    assert len(set(rvs)) == 3


def test_generate_name(core: client.CoreV1Api) -> None:
    """generateName gets a random 5-character suffix."""
    obj = core.create_namespaced_secret("default", {"metadata": {"generateName": "gen-"}})
    assert re.fullmatch(r"gen-[a-z0-9]{5}", obj.metadata.name)


def test_already_exists_is_409(core: client.CoreV1Api) -> None:
    """Creating an existing name is 409 AlreadyExists."""
    core.create_namespaced_secret("default", {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as e:
        core.create_namespaced_secret("default", {"metadata": {"name": "dup"}})
    assert (409, "AlreadyExists") == (e.value.status, _reason(e.value))


def test_missing_object_is_404(core: client.CoreV1Api) -> None:
    """Reading a missing object is 404 NotFound with a Status body."""
    with pytest.raises(ApiException) as e:
        core.read_namespaced_persistent_volume_claim("nope", "default")
    assert (404, "NotFound") == (e.value.status, _reason(e.value))
    assert 'persistentvolumeclaims "nope" not found' == _body(e.value)["message"]


@pytest.mark.parametrize("name", ["Upper", "under_score", "-lead", "x" * 254])
def test_invalid_name_is_422(core: client.CoreV1Api, name: str) -> None:
    """Names that are not RFC 1123 subdomains are 422 Invalid."""
    with pytest.raises(ApiException) as e:
        core.create_namespaced_secret("default", {"metadata": {"name": name}})
    assert (422, "Invalid") == (e.value.status, _reason(e.value))


def test_namespace_mismatch_is_400(core: client.CoreV1Api) -> None:
    """A body namespace different from the URL namespace is 400."""
    with pytest.raises(ApiException) as e:
        core.create_namespaced_secret("default", {"metadata": {"name": "x", "namespace": "kube-system"}})
    assert 400 == e.value.status


def test_unknown_namespace_is_404(core: client.CoreV1Api) -> None:
    """Creating in a namespace that does not exist is 404."""
    with pytest.raises(ApiException) as e:
        core.create_namespaced_secret("nowhere", {"metadata": {"name": "x"}})
    assert 404 == e.value.status


def test_initial_namespaces_exist(core: client.CoreV1Api) -> None:
    """default and kube-system exist from the start."""
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system"} <= names


def test_put_with_stale_resource_version_is_409(core: client.CoreV1Api) -> None:
    """PUT with an old resourceVersion is 409 Conflict; the current one succeeds."""
    obj = core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    obj.data = {"a": "2"}
    current = core.replace_namespaced_config_map("cm", "default", obj)
    obj.data = {"a": "3"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("cm", "default", obj)
    assert (409, "Conflict") == (e.value.status, _reason(e.value))
    assert "the object has been modified" in _body(e.value)["message"]
    assert {"a": "2"} == core.read_namespaced_config_map("cm", "default").data
    assert current.metadata.resource_version != obj.metadata.resource_version


def test_put_without_resource_version_is_unconditional(core: client.CoreV1Api) -> None:
    """PUT without a resourceVersion overwrites."""
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    core.replace_namespaced_config_map("cm", "default", {"metadata": {"name": "cm"}, "data": {"a": "9"}})
    assert {"a": "9"} == core.read_namespaced_config_map("cm", "default").data


def test_noop_update_keeps_resource_version(core: client.CoreV1Api) -> None:
    """An update that changes nothing does not bump the resourceVersion."""
    obj = core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    again = core.replace_namespaced_config_map("cm", "default", obj)
    assert obj.metadata.resource_version == again.metadata.resource_version


def test_status_ignored_on_main_resource(core: client.CoreV1Api) -> None:
    """PUT on the object ignores status; PUT on /status changes only status."""
    pvc = core.create_namespaced_persistent_volume_claim("default", pvc_body("c", storage_class=""))
    pvc.status.phase = "Lost"
    pvc.metadata.labels = {"x": "y"}
    updated = core.replace_namespaced_persistent_volume_claim("c", "default", pvc)
    assert ("Pending", {"x": "y"}) == (updated.status.phase, updated.metadata.labels)
    updated.status.phase = "Lost"
    updated.spec.resources.requests = {"storage": "5Gi"}
    after = core.replace_namespaced_persistent_volume_claim_status("c", "default", updated)
    assert ("Lost", {"storage": "1Gi"}) == (after.status.phase, after.spec.resources.requests)


def test_generation_counts_spec_changes_only(core: client.CoreV1Api) -> None:
    """generation increments on spec changes, not on metadata or status changes."""
    pv = core.create_persistent_volume(pv_body("pv1"))
    labelled = core.patch_persistent_volume("pv1", {"metadata": {"labels": {"a": "b"}}})
    status = core.patch_persistent_volume_status("pv1", {"status": {"message": "hi"}})
    spec = core.patch_persistent_volume("pv1", {"spec": {"mountOptions": ["ro"]}})
    assert [1, 1, 1, 2] == [o.metadata.generation for o in (pv, labelled, status, spec)]


def test_server_defaults(core: client.CoreV1Api, storage: client.StorageV1Api) -> None:
    """The server fills reclaim policy / volume mode / binding mode defaults."""
    body = pv_body("pv1")
    del body["spec"]["persistentVolumeReclaimPolicy"]
    pv = core.create_persistent_volume(body)
    sc = storage.create_storage_class({"metadata": {"name": "plain"}, "provisioner": "x.io/y"})
    assert ("Retain", "Filesystem") == (pv.spec.persistent_volume_reclaim_policy, pv.spec.volume_mode)
    assert ("Delete", "Immediate") == (sc.reclaim_policy, sc.volume_binding_mode)


def test_pvc_spec_is_immutable(core: client.CoreV1Api, storage: client.StorageV1Api) -> None:
    """Changing a PVC's access modes is 422; so is growing an unbound claim's request."""
    storage.create_storage_class(storage_class_body())
    core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_persistent_volume_claim(
            "c", "default", {"spec": {"accessModes": ["ReadWriteMany"]}}
        )
    with pytest.raises(ApiException) as grow:
        core.patch_namespaced_persistent_volume_claim(
            "c", "default", {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
        )
    assert (422, 422) == (e.value.status, grow.value.status)
    assert "except resources.requests and volumeAttributesClassName for bound claims" in grow.value.body


def test_pv_without_source_is_422(core: client.CoreV1Api) -> None:
    """A PV needs exactly one volume source."""
    body = pv_body("pv1")
    del body["spec"]["csi"]
    with pytest.raises(ApiException) as e:
        core.create_persistent_volume(body)
    assert 422 == e.value.status


def test_lease_update_is_resource_version_checked(api: client.ApiClient) -> None:
    """Leases carry MicroTime and two writers from the same RV: the second gets 409."""
    coord = client.CoordinationV1Api(api)
    body = {
        "metadata": {"name": "leader"},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 15,
            "renewTime": "2026-01-01T00:00:00.123456Z",
            "leaseTransitions": 0,
        },
    }
    lease = coord.create_namespaced_lease("kube-system", body)
    first = client.V1Lease(metadata=lease.metadata, spec=client.V1LeaseSpec(holder_identity="b"))
    coord.replace_namespaced_lease("leader", "kube-system", first)
    with pytest.raises(ApiException) as e:
        coord.replace_namespaced_lease("leader", "kube-system", client.V1Lease(metadata=lease.metadata))
    assert 409 == e.value.status
    assert "b" == coord.read_namespaced_lease("leader", "kube-system").spec.holder_identity


def test_all_namespaces_list_and_cluster_scope(core: client.CoreV1Api, storage: client.StorageV1Api) -> None:
    """The all-namespaces PVC list spans namespaces; PVs are cluster-scoped."""
    storage.create_storage_class(storage_class_body())
    core.create_namespaced_persistent_volume_claim("default", pvc_body("a"))
    core.create_namespaced_persistent_volume_claim("kube-system", pvc_body("b"))
    core.create_persistent_volume(pv_body("pv1"))
    listed = core.list_persistent_volume_claim_for_all_namespaces()
    assert [("default", "a"), ("kube-system", "b")] == [
        (i.metadata.namespace, i.metadata.name) for i in listed.items
    ]
    assert None is core.read_persistent_volume("pv1").metadata.namespace
    assert listed.metadata.resource_version.isdigit()


def _body(e: ApiException) -> dict[str, object]:
    import json

    data: dict[str, object] = json.loads(e.body)
    return data


def _reason(e: ApiException) -> object:
    return _body(e)["reason"]
