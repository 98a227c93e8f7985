"""PV controller Warnings: ProvisioningFailed for a claim naming a missing StorageClass, deduplicated."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client

from provisioner.testworld.kube_sim import KubeSimulator
from tests.integration.kube_sim.bodies import pv_body, pvc_body, storage_class_body

MISSING = 'storageclass.storage.k8s.io "fast" not found'


def _events(sim: KubeSimulator, claim: str = "c") -> list[tuple[str, str, str, int, str]]:
    return [
        (e["type"], e["reason"], e["message"], e["count"], e["source"]["component"])
        for e in sim.list("events", "default")
        if e["involvedObject"]["name"] == claim
    ]


def _touch(core: client.CoreV1Api, n: int) -> None:
    for i in range(n):
        core.patch_namespaced_persistent_volume_claim("c", "default", {"metadata": {"labels": {"n": str(i)}}})


def test_missing_class_is_one_warning(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """A claim naming a class that does not exist gets Warning ProvisioningFailed and no handshake."""
    core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    sim.wait_idle()
    claim = sim.get("pvc", "default", "c")
    assert claim is not None
    assert [("Warning", "ProvisioningFailed", MISSING, 1, "persistentvolume-controller")] == _events(sim)
    assert ({}, "Pending") == (claim["metadata"].get("annotations") or {}, claim["status"]["phase"])


def test_every_sync_bumps_the_same_event(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """Each sync of the claim repeats the Warning: one Event, count rising, lastTimestamp moving."""
    core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    sim.wait_idle()
    (first,) = sim.list("events", "default")
    _touch(core, 2)
    sim.wait_idle()
    (event,) = sim.list("events", "default")
    assert [("Warning", "ProvisioningFailed", MISSING, 3, "persistentvolume-controller")] == _events(sim)
    assert (first["metadata"]["name"], first["firstTimestamp"]) == (
        event["metadata"]["name"],
        event["firstTimestamp"],
    )
    assert event["lastTimestamp"] >= first["lastTimestamp"]


def test_periodic_resync_repeats_the_warning() -> None:
    """Without any write, the resync period alone raises the count (still a single Event)."""
    with KubeSimulator(pv_resync_interval=0.1) as sim, sim.api_client() as api:
        client.CoreV1Api(api).create_namespaced_persistent_volume_claim("default", pvc_body("c"))
        deadline = time.monotonic() + 5
        counts: list[int] = []
        while time.monotonic() < deadline:
            counts = [count for _, _, _, count, _ in _events(sim)]
            if counts and counts[0] >= 3:
                break
            time.sleep(0.05)
        assert [] == sim.controller_errors
    assert 1 == len(counts)
    assert counts[0] >= 3


def test_existing_class_gets_no_warning(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """A claim whose class exists is announced (ExternalProvisioning), never warned about."""
    storage.create_storage_class(storage_class_body())
    core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    _touch(core, 2)
    sim.wait_idle()
    assert [("ExternalProvisioning", 1)] == [(e[1], e[3]) for e in _events(sim)]


def test_class_created_later_stops_the_warning(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """Once the class appears the claim is handed to the provisioner and the Warning stops counting."""
    core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    sim.wait_idle()
    storage.create_storage_class(storage_class_body())
    sim.wait_idle()
    _touch(core, 2)
    sim.resync()
    sim.wait_idle()
    assert [("ProvisioningFailed", 1), ("ExternalProvisioning", 1)] == sorted(
        ((e[1], e[3]) for e in _events(sim)), reverse=True
    )


def test_pre_bound_and_bound_claims_get_no_warning(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """spec.volumeName set (pre-bound) or a PV whose claimRef names the claim (binds): no Warning."""
    pre_bound: dict[str, Any] = pvc_body("pre")
    pre_bound["spec"]["volumeName"] = "pv-elsewhere"
    core.create_namespaced_persistent_volume_claim("default", pre_bound)
    core.create_persistent_volume(pv_body("pv1", claim=("default", "c", "")))
    core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    sim.wait_idle()
    _touch(core, 1)
    sim.resync()
    sim.wait_idle()
    claim = sim.get("pvc", "default", "c")
    assert claim is not None
    assert ("pv1", "Bound") == (claim["spec"]["volumeName"], claim["status"]["phase"])
    assert ([], []) == (_events(sim, "pre"), _events(sim, "c"))


def test_deleted_event_is_recreated_on_the_next_sync(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """If the Event is deleted, the next repeat creates a new one with count 1 (client-go's fallback)."""
    core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    sim.wait_idle()
    (event,) = sim.list("events", "default")
    core.delete_namespaced_event(event["metadata"]["name"], "default")
    _touch(core, 1)
    sim.wait_idle()
    assert [("Warning", "ProvisioningFailed", MISSING, 1, "persistentvolume-controller")] == _events(sim)
    assert event["metadata"]["name"] != sim.list("events", "default")[0]["metadata"]["name"]
