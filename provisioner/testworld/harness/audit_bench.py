"""Audit at scale: N Cinder volumes and N bound PVs (+ their claims) audited against the emulator.

``python -m provisioner.testworld.harness.audit_bench --volumes 10000`` seeds the Cinder emulator (every
volume tagged like the controller tags it, in-use with an attachment) and the Kubernetes simulator (a Bound
PV and its claim per volume, plus a few planted defects), then runs the audit exactly as the CLI does —
official clients over HTTP, paginated, tag-filtered lists — and prints one JSON line: seconds, Cinder and
Kubernetes requests by operation, findings by kind. The issue's bar: 10,000 + 10,000 in under 10 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from provisioner.adapters.cinder.client import make_cinder
from provisioner.adapters.kube import KubeAdapter
from provisioner.audit.collect import collect
from provisioner.audit.decide import Options, audit
from provisioner.config.auth import parse_cloud
from provisioner.domain import names
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from provisioner.testworld.kube_sim import KubeSimulator
from provisioner.testworld.objects import emulator_cloud

CLUSTER = "bench"
PLANTED = {"orphan-volume": 3, "missing-volume": 2}


def seed(sim: KubeSimulator, emu: CinderEmulator, count: int) -> None:
    """``count`` healthy volume/PV/claim triples, then the planted defects (counted in ``PLANTED``)."""
    store = emu._store  # the emulator's own operations, without HTTP: seeding is not what is measured
    connector = {"host": "bench", "ip": "127.0.0.1", "initiator": "iqn.2024-01.io.netvol:bench"}
    for i in range(count + PLANTED["orphan-volume"]):
        uid = str(uuid.UUID(int=i + 1))
        meta = {
            names.META_CLUSTER: CLUSTER,
            names.META_PVC_NAMESPACE: "default",
            names.META_PVC_NAME: f"data-{i}",
            names.META_PVC_UID: uid,
            names.META_PV_NAME: names.pv_name_for(uid),
            names.META_STORAGE_CLASS: "fast",
        }
        vol = store.create_volume({"name": names.pv_name_for(uid), "size": 1, "metadata": meta})
        if i >= count:
            continue  # planted orphan: tagged, no claim, no PV
        att = store.create_attachment(vol["id"], connector, None, "rw")
        sim.create("persistentvolumeclaims", _claim(i, uid), namespace="default")
        sim.create("persistentvolumes", _pv(uid, vol["id"], att["id"]))
    for j in range(PLANTED["missing-volume"]):
        uid = str(uuid.UUID(int=10**9 + j))
        sim.create("persistentvolumeclaims", _claim(10**9 + j, uid), namespace="default")
        sim.create("persistentvolumes", _pv(uid, str(uuid.uuid4()), None))


def _claim(i: int, uid: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"data-{i}", "namespace": "default", "uid": uid},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "fast",
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeName": names.pv_name_for(uid),
        },
    }


def _pv(uid: str, vid: str, attachment: str | None) -> dict[str, Any]:
    ann = {names.ANN_VOLUME_ID: vid, names.ANN_PROVISIONED_BY: names.DEFAULT_PROVISIONER_NAME}
    if attachment:
        ann[names.ANN_ATTACHMENT_ID] = attachment
    return {
        "metadata": {"name": names.pv_name_for(uid), "annotations": ann},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "fast",
            "claimRef": {"namespace": "default", "name": "x", "uid": uid},
            "csi": {"driver": names.CSI_DRIVER_NAME, "volumeHandle": vid},
        },
    }


def measure(count: int, *, page_size: int = 1000) -> dict[str, Any]:
    """Seed, then time one audit (collect + decide) end to end."""
    with KubeSimulator(controllers=False) as sim, CinderEmulator(page_size_max=page_size) as emu:
        t0 = time.monotonic()
        seed(sim, emu, count)
        seeded = time.monotonic() - t0
        raw = emulator_cloud(emu.keystone_url, emu.username, emu.password, emu.project_id)
        cloud = parse_cloud("default", raw, env={}, base_dir=None)
        cinder = make_cinder(cloud, page_size=page_size)
        cinder.connect()
        kube = KubeAdapter(sim.configuration(), qps=1000, burst=1000)
        emu.clear_calls()
        try:
            started = time.monotonic()
            options = Options(cluster_id=CLUSTER, default_cloud="default", now=time.time())
            observed = collect(clouds={"default": cinder}, kube=kube, options=options)
            report = audit(observed, options)
            seconds = time.monotonic() - started
        finally:
            kube.close()
        kinds = Counter(f.kind.value for f in report.findings)
        return {
            "volumes": report.scanned.volumes,
            "persistent_volumes": report.scanned.persistent_volumes,
            "audit_seconds": round(seconds, 2),
            "seed_seconds": round(seeded, 2),
            "cinder_requests": dict(Counter(c.operation for c in emu.calls())),
            "kube_requests": dict(kube.requests_by_method),
            "findings": dict(kinds),
            "planted": PLANTED,
            "planted_found": all(kinds.get(k, 0) == v for k, v in PLANTED.items())
            and sum(kinds.values()) == sum(PLANTED.values()),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--volumes", type=int, default=10_000)
    parser.add_argument("--budget-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = measure(args.volumes)
    print(json.dumps(result), flush=True)
    return 0 if result["planted_found"] and result["audit_seconds"] < args.budget_seconds else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
