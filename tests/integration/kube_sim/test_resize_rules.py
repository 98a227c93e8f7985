"""The API server's resize rules in the simulator, through the official client (as a user's kubectl edit).

Real kube-apiserver: only a bound claim's ``resources.requests`` may change; the PersistentVolumeClaimResize
admission plugin refuses growth (403) unless the claim's class says ``allowVolumeExpansion: true``; with
RecoverVolumeExpansionFailure a request may go back down, but never to or below ``status.capacity``. The PV
controller keeps a claim's old ``status.capacity`` while its PV carries the resizer's pre-resize annotation.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provisioner.testworld.kube_sim import KubeSimulator
from tests.integration.kube_sim.bodies import pv_body, pvc_body, storage_class_body


def bound_claim(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api, *, allow: bool | None
) -> None:
    sc: dict[str, Any] = storage_class_body()
    if allow is not None:
        sc["allowVolumeExpansion"] = allow
    storage.create_storage_class(sc)
    claim = core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    core.create_persistent_volume(pv_body("pv-c", claim=("default", "c", claim.metadata.uid)))
    sim.wait_idle()
    assert "Bound" == core.read_namespaced_persistent_volume_claim("c", "default").status.phase


def grow(core: client.CoreV1Api, size: str) -> Any:
    return core.patch_namespaced_persistent_volume_claim(
        "c", "default", {"spec": {"resources": {"requests": {"storage": size}}}}
    )


def test_bound_claim_grows_on_a_class_that_allows_it(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """allowVolumeExpansion: true → the request changes (200)."""
    bound_claim(sim, core, storage, allow=True)
    assert {"storage": "4Gi"} == grow(core, "4Gi").spec.resources.requests


@pytest.mark.parametrize("allow", [False, None])
def test_growth_is_forbidden_without_allow_volume_expansion(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api, allow: bool | None
) -> None:
    """No (or false) allowVolumeExpansion: 403 with the admission plugin's message; request unchanged."""
    bound_claim(sim, core, storage, allow=allow)
    with pytest.raises(ApiException) as e:
        grow(core, "4Gi")
    assert 403 == e.value.status
    assert "must support resize" in e.value.body
    assert {"storage": "1Gi"} == core.read_namespaced_persistent_volume_claim(
        "c", "default"
    ).spec.resources.requests


def test_request_may_not_go_to_or_below_status_capacity(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """Recovering from a failed expansion may lower the request, but not to status.capacity (422)."""
    bound_claim(sim, core, storage, allow=True)
    grow(core, "4Gi")
    assert {"storage": "2Gi"} == grow(core, "2Gi").spec.resources.requests
    with pytest.raises(ApiException) as e:
        grow(core, "1Gi")
    assert 422 == e.value.status
    assert "spec.resources.requests.storage" in e.value.body
    assert "can not be less than status.capacity" in e.value.body


def test_pv_controller_keeps_old_capacity_while_the_node_resize_is_pending(
    sim: KubeSimulator, core: client.CoreV1Api, storage: client.StorageV1Api
) -> None:
    """While the PV carries the pre-resize annotation the claim keeps its capacity; then it follows."""
    bound_claim(sim, core, storage, allow=True)
    core.patch_persistent_volume(
        "pv-c",
        {
            "metadata": {"annotations": {"volume.alpha.kubernetes.io/pre-resize-capacity": "1Gi"}},
            "spec": {"capacity": {"storage": "4Gi"}},
        },
    )
    grow(core, "4Gi")
    sim.wait_idle()
    assert {"storage": "1Gi"} == core.read_namespaced_persistent_volume_claim("c", "default").status.capacity
    core.patch_persistent_volume(
        "pv-c", {"metadata": {"annotations": {"volume.alpha.kubernetes.io/pre-resize-capacity": None}}}
    )
    sim.wait_idle()
    assert {"storage": "4Gi"} == core.read_namespaced_persistent_volume_claim("c", "default").status.capacity
