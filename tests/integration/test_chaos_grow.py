"""The chaos harness's resize of bound claims (what arms the expand flow's crash points), on the simulator."""

from __future__ import annotations

import random

from provisioner.adapters.kube import KubeAdapter
from provisioner.testworld.harness import chaos
from provisioner.testworld.kube_sim import KubeSimulator
from tests.integration.kube_sim.bodies import pv_body, pvc_body, storage_class_body


class Always(random.Random):
    """A random source whose every draw picks 'grow'."""

    def random(self) -> float:
        return 0.0


def test_grow_first_requests_growth_then_lets_the_claim_go_once_the_pv_has_it() -> None:
    """First call patches the request to GROW_TO and holds the claim; once the PV shows it, it is released."""
    with KubeSimulator() as sim:
        kube = KubeAdapter(sim.configuration(), qps=100, burst=100)
        kube.create("storageclasses", {**storage_class_body(), "allowVolumeExpansion": True})
        claim = kube.create("persistentvolumeclaims", pvc_body("c"), namespace="default")
        kube.create("persistentvolumes", pv_body("pv-c", claim=("default", "c", claim["metadata"]["uid"])))
        sim.wait_idle()
        pvc = sim.get("persistentvolumeclaims", "default", "c")
        assert pvc is not None
        growing: dict[str, float] = {}
        stats: dict[str, int] = {}
        assert chaos._grow_first(sim, kube, pvc, rng=Always(), growing=growing, stats=stats)
        live = sim.get("persistentvolumeclaims", "default", "c")
        assert live is not None
        assert {"storage": chaos.GROW_TO} == live["spec"]["resources"]["requests"]
        assert chaos._grow_first(sim, kube, live, rng=Always(), growing=growing, stats=stats)  # PV not yet
        kube.patch("persistentvolumes", "pv-c", {"spec": {"capacity": {"storage": chaos.GROW_TO}}})
        assert not chaos._grow_first(sim, kube, live, rng=Always(), growing=growing, stats=stats)
        assert {"grown": 1, "grown_done": 1} == stats
        # asked again while its deletion is under way: still not deleted-blocked, and counted once
        assert not chaos._grow_first(sim, kube, live, rng=Always(), growing=growing, stats=stats)
        assert {"grown": 1, "grown_done": 1} == stats
        kube.close()


def test_expand_crash_points_are_armed_like_the_others() -> None:
    """The expand flow's checkpoints are among the points the harness arms."""
    assert {"before_cinder_extend", "after_cinder_extend", "after_pv_resize"} <= set(chaos.CRASH_POINTS)
