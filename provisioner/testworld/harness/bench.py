"""Controller benchmark: a PVC burst against a Cinder with a known cost, and the cache's memory.

Throughput: N claims are created at once; Cinder's create call takes T seconds and the controller may
have C Cinder calls in flight, so no provisioner can bind them faster than the physical bound N·T/C.
We report efficiency = bound / measured wall time (target ≥ 0.87), the controller's own CPU time per
claim (target ≤ 2 ms; the test world runs in a separate process so it is not counted), and the memory
the informer cache keeps per object (target ≤ 10 KiB) measured with tracemalloc over 10,000 PVs.
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from kubernetes.client import Configuration

from provisioner.adapters.cinder.client import make_cinder
from provisioner.adapters.kube import KubeAdapter
from provisioner.config.settings import ProvisionerConfig
from provisioner.domain import names
from provisioner.runtime.controller import trim_pv, trim_pvc
from provisioner.runtime.informer import Informer
from provisioner.runtime.replica import Replica
from provisioner.telemetry import logs
from provisioner.telemetry.metrics import make_metrics
from provisioner.testworld import objects
from provisioner.testworld.objects import emulator_cloud


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def burst(n: int, latency: float, in_flight: int, workers: int) -> dict[str, Any]:
    """Provision ``n`` claims at once; return timing and CPU figures."""
    world = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provisioner.testworld.harness.world_server",
            "--create-latency",
            str(latency),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert world.stdout is not None
        ep = json.loads(world.stdout.readline())
        cfg = Configuration(host=ep["kube"])
        config = ProvisionerConfig.from_mapping(
            {
                "cluster_id": "bench",
                "clouds": {
                    "default": emulator_cloud(
                        ep["keystone"], ep["username"], ep["password"], ep["project_id"]
                    )
                },
                "default_cloud": "default",
                "namespace": "kube-system",
                "secret_namespace": "kube-system",
                "workers": workers,
                "cinder_max_in_flight": in_flight,
                "kube_qps": 2000,
                "kube_burst": 2000,
            }
        )
        kube = KubeAdapter(Configuration(host=ep["kube"]), qps=5000, burst=5000)
        kube.create("storageclasses", objects.storage_class("bench", {"type": "rbd"}))
        # The burst: every claim exists (and is marked for us) before the controller starts.
        for i in range(n):
            kube.create("persistentvolumeclaims", objects.claim(f"b{i:05d}", "bench"), namespace="default")
        time.sleep(1.0)  # let the simulated PV controller add its handshake annotations
        metrics = make_metrics()
        creates: list[tuple[float, float]] = []  # (start, end) of every create call

        def observe(operation: str, status: str, seconds: float) -> None:
            metrics.observe_cinder(operation, status, seconds)
            if operation == "create_volume":
                now = time.monotonic()
                creates.append((now - seconds, now))

        cinder = make_cinder(config.cloud(None), max_in_flight=in_flight, observer=observe)
        replica = Replica(
            config,
            client_configuration=cfg,
            identity="bench",
            clouds={"default": cinder},
            metrics=metrics,
            poll_initial_seconds=0.05,
            poll_max_seconds=0.5,
        )
        cpu0, t0 = _cpu(), time.monotonic()
        replica.start()
        pvs = replica.controller.pvs
        while len(pvs) < n:
            time.sleep(0.02)
        wall = time.monotonic() - t0
        cpu = _cpu() - cpu0
        calls = _cinder_calls(replica)
        kube_calls = dict(replica.kube.requests_by_method)
        replica.terminate()
        kube.close()
    finally:
        if world.stdin:
            world.stdin.close()
        world.wait(30)
    bound = n * latency / in_flight
    return {
        "n": n,
        "latency_s": latency,
        "in_flight": in_flight,
        "workers": workers,
        "bound_s": round(bound, 2),
        "wall_s": round(wall, 2),
        "efficiency": round(bound / wall, 3),
        # where the time went: until the first create started, the create phase, after the last create
        "first_create_s": round(min(s for s, _ in creates) - t0, 2) if creates else None,
        "create_phase_s": round(max(e for _, e in creates) - min(s for s, _ in creates), 2)
        if creates
        else None,
        "after_last_create_s": round(t0 + wall - max(e for _, e in creates), 2) if creates else None,
        "controller_cpu_ms_per_pvc": round(cpu * 1000 / n, 3),
        "cinder_calls_per_pvc": {k: round(v / n, 2) for k, v in sorted(calls.items())},
        "kube_requests_per_pvc": {k: round(v / n, 2) for k, v in sorted(kube_calls.items())},
    }


def _cinder_calls(replica: Replica) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in replica.metrics.cinder_request_seconds.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                op = sample.labels["operation"]
                out[op] = out.get(op, 0.0) + sample.value
    return out


def cache_memory(count: int = 10_000) -> dict[str, Any]:
    """Bytes retained per cached PV / PVC in an informer fed realistic objects (with managedFields)."""

    def pv(i: int) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": f"pvc-{i:08d}-aaaa-bbbb-cccc-dddddddddddd",
                "uid": f"{i:08d}-1111-2222-3333-444444444444",
                "resourceVersion": str(i),
                "creationTimestamp": "2026-11-28T12:00:00Z",
                "annotations": {
                    names.ANN_PROVISIONED_BY: names.DEFAULT_PROVISIONER_NAME,
                    names.ANN_VOLUME_ID: f"{i:08d}-5555-6666-7777-888888888888",
                    names.ANN_ATTACHMENT_ID: f"{i:08d}-9999-aaaa-bbbb-cccccccccccc",
                    names.ANN_EXPORT_MODE: "attachment",
                    names.ANN_CLOUD: "default",
                },
                "finalizers": ["kubernetes.io/pv-protection", names.PV_VOLUME_FINALIZER],
                "managedFields": [
                    {
                        "manager": "kube-controller-manager",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:status": {"f:phase": {}}},
                    }
                ]
                * 3,
            },
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"],
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": "team-a",
                    "name": f"data-{i}",
                    "uid": f"{i:08d}-1111-2222-3333-444444444444",
                },
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "cinder-rbd",
                "volumeMode": "Filesystem",
                "csi": {
                    "driver": names.CSI_DRIVER_NAME,
                    "volumeHandle": f"{i:08d}-5555-6666-7777-888888888888",
                    "fsType": "ext4",
                    "volumeAttributes": {
                        "type": "rbd",
                        "pool": "volumes",
                        "image": f"volume-{i:08d}",
                        "monitors": "10.0.0.1:6789,10.0.0.2:6789,10.0.0.3:6789",
                        "user": "cinder",
                        "contentSource": "empty",
                        "growFs": "false",
                    },
                },
            },
            "status": {"phase": "Bound"},
        }

    class Source:
        def __init__(self, items: list[dict[str, Any]]) -> None:
            self.items = items

        def list(self, resource: str) -> tuple[list[dict[str, Any]], str]:
            items, self.items = self.items, []
            return items, "1"

        def watch(self, resource: str, **kw: Any) -> Any:
            raise SystemExit  # never reached: we only relist

    out = {}
    for kind, trimmer in (("pv", trim_pv), ("pvc", trim_pvc)):
        items = [pv(i) for i in range(count)]
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        inf = Informer("x", Source(items), trimmer=trimmer)
        inf._relist()
        del items
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        retained = sum(s.size_diff for s in after.compare_to(before, "filename"))
        out[f"{kind}_cache_bytes_per_object"] = round(retained / len(inf))
    return out


def main() -> int:
    """CLI: ``python -m provisioner.testworld.harness.bench [--pvcs N] [--latency T] [--in-flight C]``."""
    p = argparse.ArgumentParser()
    p.add_argument("--pvcs", type=int, default=1000)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--workers", type=int, default=64)
    args = p.parse_args()
    logs.configure("critical")
    result = burst(args.pvcs, args.latency, args.in_flight, args.workers)
    result.update(cache_memory())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
