"""Server plumbing: discovery, kubectl, kubeconfig, clean shutdown, throughput."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config

from provisioner.testworld.kube_sim import KubeSimulator
from tests.integration.kube_sim.bodies import pv_body, pvc_body, storage_class_body


def _get(sim: KubeSimulator, path: str) -> dict[str, object]:
    with urllib3.PoolManager() as http:
        resp = http.request("GET", sim.url + path)
        data: dict[str, object] = json.loads(resp.data)
        return data


def test_discovery_documents(sim: KubeSimulator) -> None:
    """/version, /api, /api/v1, /apis and /apis/<group>/<version> describe what is served."""
    core_names = {r["name"] for r in _get(sim, "/api/v1")["resources"]}  # type: ignore[union-attr, index]
    groups = {g["name"] for g in _get(sim, "/apis")["groups"]}  # type: ignore[union-attr, index]
    snap = {r["name"] for r in _get(sim, "/apis/snapshot.storage.k8s.io/v1")["resources"]}  # type: ignore[union-attr, index]
    assert "1" == _get(sim, "/version")["major"]
    assert ["v1"] == _get(sim, "/api")["versions"]
    assert {
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "persistentvolumes",
        "secrets",
    } <= core_names
    assert {"storage.k8s.io", "coordination.k8s.io", "snapshot.storage.k8s.io"} <= groups
    assert {"volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses"} <= snap


def test_unknown_path_is_404(sim: KubeSimulator) -> None:
    """Unknown resources are 404 Status objects."""
    assert 404 == _get(sim, "/api/v1/widgets")["code"]


def test_kubeconfig_loads_with_official_loader(sim: KubeSimulator, tmp_path: Path) -> None:
    """write_kubeconfig produces a file the official loader accepts."""
    path = sim.write_kubeconfig(tmp_path / "kubeconfig")
    with config.new_client_from_config(config_file=str(path)) as api:
        names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    assert "default" in names


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_get_json(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api, tmp_path: Path
) -> None:
    """kubectl works against the simulator through discovery."""
    storage.create_storage_class(storage_class_body())
    core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    path = sim.write_kubeconfig(tmp_path / "kubeconfig")
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(path), "get", "pvc", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert ["c"] == [i["metadata"]["name"] for i in json.loads(out.stdout)["items"]]


def test_stop_leaves_no_threads(tmp_path: Path) -> None:
    """stop() ends open watches and joins every server and controller thread."""
    before = set(threading.enumerate())
    sim = KubeSimulator().start()
    api = sim.api_client()
    core = client.CoreV1Api(api)
    core.list_namespaced_config_map("default")
    from kubernetes import watch

    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=30):
                pass
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 5
    while not sim.store.watchers() and time.monotonic() < deadline:
        time.sleep(0.01)
    sim.stop()
    t.join(5)
    api.close()
    assert (False, []) == (t.is_alive(), errors)
    assert set() == set(threading.enumerate()) - before


def test_burst_of_claims_binds_quickly() -> None:
    """1,000 PVC creates and their pre-bound PVs stay fast (guards against O(n^2) controllers)."""
    with KubeSimulator() as sim, sim.api_client() as api:
        core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
        storage.create_storage_class(storage_class_body())
        started = time.monotonic()
        uids = [
            core.create_namespaced_persistent_volume_claim("default", pvc_body(f"c{i}")).metadata.uid
            for i in range(1000)
        ]
        for i, uid in enumerate(uids):
            core.create_persistent_volume(pv_body(f"pv{i}", claim=("default", f"c{i}", uid)))
        assert sim.wait_idle(60)
        elapsed = time.monotonic() - started
        bound = [
            p
            for p in core.list_namespaced_persistent_volume_claim("default").items
            if p.status.phase == "Bound"
        ]
    assert 1000 == len(bound)
    assert elapsed < 20, elapsed


def test_custom_objects_list_and_watch(sim: KubeSimulator, custom: client.CustomObjectsApi) -> None:
    """VolumeSnapshots are served through CustomObjectsApi, including watch."""
    from kubernetes import watch

    body = {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "x"},
            "spec": {"source": {"persistentVolumeClaimName": "c"}}}  # fmt: skip
    created = custom.create_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", "default", "volumesnapshots", body
    )
    w = watch.Watch()
    stream = w.stream(custom.list_cluster_custom_object, "snapshot.storage.k8s.io", "v1", "volumesnapshots",
                      timeout_seconds=5)  # fmt: skip
    first = next(iter(stream))
    w.stop()
    listed = custom.list_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", "default", "volumesnapshots"
    )
    assert ("ADDED", "x") == (first["type"], first["object"]["metadata"]["name"])
    assert [created["metadata"]["uid"]] == [i["metadata"]["uid"] for i in listed["items"]]
    assert "VolumeSnapshot" == listed["items"][0]["kind"]


def test_dynamic_client_discovers_resources(api: client.ApiClient) -> None:
    """The official DynamicClient finds kinds through discovery."""
    from kubernetes import dynamic

    dyn = dynamic.DynamicClient(api)
    pvcs = dyn.resources.get(api_version="v1", kind="PersistentVolumeClaim")
    snaps = dyn.resources.get(api_version="snapshot.storage.k8s.io/v1", kind="VolumeSnapshot")
    assert ([], []) == (pvcs.get(namespace="default").items, snaps.get(namespace="default").items)
