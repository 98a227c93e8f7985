"""Real Ceph behind Cinder's own RBD driver, for the ``cinder_real`` tests (one cluster per session).

``ceph_cinder`` starts a throwaway single-node Ceph (``provisioner.testworld.real_cinder.ceph``) and real
Cinder with one backend, ``ceph`` (``cinder.volume.drivers.rbd.RBDDriver`` on that cluster, volume type
``ceph``) plus cinder-backup's posix driver; ``ceph_world`` puts the Kubernetes simulator and a controller
replica in front of it.  Without the Debian packages (``.ci/run`` installs them) the tests skip with the
list of what is missing, and fail instead when ``CI`` is set: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from provisioner.adapters.kube import KubeAdapter
from provisioner.testworld.kube_sim import KubeSimulator
from provisioner.testworld.real_cinder import ceph as ceph_mod
from tests.e2e.world import World, assert_written_objects_valid

#: The Cinder backend / volume type that is the RBD driver on the real cluster.
CEPH_TYPE = "ceph"


@dataclass
class CephCinder:
    """The running cluster and the Cinder in front of it, with their start-up timings."""

    ceph: ceph_mod.CephCluster
    cinder: Any  # RealCinderHandle
    timings: dict[str, float] = field(default_factory=dict)


def require(missing: list[str], what: str) -> None:
    """Skip (or, under CI, fail) when the machine lacks parts of the real backend."""
    if not missing:
        return
    message = f"{what} cannot run here, missing: {', '.join(missing)}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI installs these; see .ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def ceph_cinder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCinder]:
    """One real Ceph cluster and one real Cinder (RBD driver on it) for the whole session."""
    require(ceph_mod.missing_parts(), "real Ceph")
    from provisioner.testworld.real_cinder.launcher import start_real_cinder

    root = tmp_path_factory.mktemp("ceph-cinder")
    with ExitStack() as stack:
        cluster = stack.enter_context(ceph_mod.start_ceph(root / "ceph"))
        started = time.monotonic()
        handle = stack.enter_context(start_real_cinder(root / "cinder", backends=(CEPH_TYPE,), ceph=cluster))
        timings = {**cluster.timings, "cinder_seconds": time.monotonic() - started}
        print(f"\nreal Ceph + Cinder RBD driver started: {timings}")
        yield CephCinder(ceph=cluster, cinder=handle, timings=timings)


@contextmanager
def ceph_world(handle: CephCinder) -> Iterator[World]:
    """Simulator + real Cinder on real Ceph (no-auth, explicit endpoint), a replica leading."""
    cinder = handle.cinder
    with ExitStack() as stack:
        sim = stack.enter_context(KubeSimulator())
        kube = KubeAdapter(sim.configuration(), qps=500, burst=500)
        stack.callback(kube.close)
        cloud = {"auth_type": "noauth", "auth": {"endpoint": cinder.url, "token": cinder.token}}
        world = World(sim=sim, cloud=cloud, kube=kube, stack=stack)
        world.start_replica()
        yield world
        world.stop_replicas()
        assert_written_objects_valid(sim)


def pv_image(pv: dict[str, Any]) -> tuple[str, str]:
    """(pool, image) the PV names, from ``spec.rbd`` (in-tree) or the CSI volumeAttributes."""
    from provisioner import csi_contract

    if "rbd" in pv["spec"]:
        return pv["spec"]["rbd"]["pool"], pv["spec"]["rbd"]["image"]
    target = csi_contract.decode(pv["spec"]["csi"]["volumeAttributes"])
    assert isinstance(target, csi_contract.RbdTarget), target
    return target.pool, target.image


def pv_bytes(pv: dict[str, Any]) -> int:
    """The PV's capacity in bytes (the controller writes whole Gi)."""
    storage = str(pv["spec"]["capacity"]["storage"])
    assert storage.endswith("Gi"), storage
    return int(storage[:-2]) << 30


def reap_deleted_images(cluster: ceph_mod.CephCluster, pool: str) -> list[str]:
    """Remove the ``*.deleted`` images Cinder 29's RBD driver leaves behind; their names.

    Its fast delete path drops a clone without removing the ``<clone>.clone_snap`` it cut on the source
    (a PVC clone, or cinder-backup's temporary clone of an in-use volume), so deleting the source later
    only renames it to ``<source>.deleted``, an image Cinder no longer knows.  An admin's cleanup, so the
    session's other tests start from an empty pool.
    """
    reaped = []
    for image in cluster.images(pool):
        if not image.endswith(".deleted"):
            continue
        for snap in cluster.snapshots(pool, image):
            spec = f"{pool}/{image}@{snap['name']}"
            if str(snap.get("protected")).lower() == "true":
                cluster.rbd("snap", "unprotect", spec)
            cluster.rbd("snap", "rm", spec)
        cluster.rbd("rm", f"{pool}/{image}")
        reaped.append(image)
    return reaped
