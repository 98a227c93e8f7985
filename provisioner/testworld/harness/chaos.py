"""Chaos harness: two controller replicas under kills, split brain and Cinder faults; count what leaked.

``python -m provisioner.testworld.harness.chaos --cycles N --seed S`` (``tox -e chaos``) runs the real
controller (leader election on) against the Kubernetes simulator and the Cinder emulator. It creates and
deletes N claims while, at random, it kills the leader — including at armed crash points between the Cinder
create and the PV save, and between the Cinder delete and the finalizer removal —, sends it SIGTERM, cuts
its lease renewals (split brain), and injects Cinder faults (5xx, 429 + Retry-After, volumes going to error,
slow volumes). Killed replicas are replaced, as a Deployment would. At the end it counts:

- ``leaked``: Cinder volumes of this cluster left after every claim was deleted,
- ``duplicates``: claims that had more than one live Cinder volume when they were Bound,
- ``lost``: Bound claims whose PV's Cinder volume did not exist,
- ``silent``: claims neither Bound nor explaining why with a Warning event at the check.

The last line printed is the JSON summary; the exit code is 0 only if all four are 0.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from provisioner.adapters.kube import KubeAdapter
from provisioner.config.settings import ProvisionerConfig
from provisioner.domain import names
from provisioner.domain.errors import KubeUnavailable
from provisioner.domain.outcome import SimulatedCrash
from provisioner.runtime.replica import Replica
from provisioner.telemetry import logs
from provisioner.testworld import objects
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from provisioner.testworld.kube_sim import KubeSimulator
from provisioner.testworld.objects import emulator_cloud

CRASH_POINTS = (
    "after_cinder_create",
    "after_export",
    "after_pv_create",
    "after_cinder_delete",
    "before_pv_finalizer_removal",
)
FAULT_OPS = (
    "create_volume",
    "get_volume",
    "list_volumes",
    "delete_volume",
    "create_attachment",
    "complete_attachment",
    "delete_attachment",
)


class Harness:
    """State of one chaos run."""

    def __init__(self, sim: KubeSimulator, emu: CinderEmulator, rng: random.Random, out: Any) -> None:
        self.sim, self.emu, self.rng, self.out = sim, emu, rng, out
        self.config = ProvisionerConfig.from_mapping(
            {
                "cluster_id": "chaos",
                "clouds": {
                    "default": emulator_cloud(emu.keystone_url, emu.username, emu.password, emu.project_id)
                },
                "default_cloud": "default",
                "namespace": "kube-system",
                "secret_namespace": "kube-system",
                "workers": 8,
                "create_deadline_seconds": 8,
                "max_error_retries": 5,
                "leader_election": {"lease_duration": 3, "renew_deadline": 2, "retry_period": 0.5},
            }
        )
        self.replicas: list[Replica] = []
        self.armed: dict[str, str] = {}  # replica identity → crash point
        self.counter = 0
        self.stats = {"kills": 0, "crash_points": 0, "terms": 0, "cuts": 0, "faults": 0}
        self.lock = threading.Lock()

    def spawn(self) -> Replica:
        self.counter += 1
        identity = f"replica-{self.counter}"

        def checkpoint(point: str) -> None:
            if self.armed.get(identity) == point:
                self.armed.pop(identity, None)
                self.stats["crash_points"] += 1
                raise SimulatedCrash(point)

        r = Replica(
            self.config,
            client_configuration=self.sim.configuration(),
            identity=identity,
            resync_seconds=20.0,
            watch_timeout_seconds=15,
            checkpoint=checkpoint,
            create_in_flight_seconds=5.0,  # the harness's slowest create is 1 s
            poll_initial_seconds=0.05,
            poll_max_seconds=0.5,
            final_retry_seconds=5.0,
        )
        r.start()
        self.replicas.append(r)
        return r

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if not r.finished.is_set()]

    def leader(self) -> Replica | None:
        for r in self.alive():
            if r.elector is not None and r.elector.is_leader():
                return r
        return None

    def keep_two(self) -> None:
        while len(self.alive()) < 2:
            self.spawn()

    def chaos_tick(self) -> None:
        rng = self.rng
        roll = rng.random()
        leader = self.leader()
        if leader is not None and roll < 0.004:
            leader.crash()
            self.stats["kills"] += 1
        elif leader is not None and roll < 0.02:
            self.armed.setdefault(leader.identity, rng.choice(CRASH_POINTS))
        elif leader is not None and roll < 0.022:
            threading.Thread(target=leader.terminate, daemon=True).start()
            self.stats["terms"] += 1
        elif leader is not None and roll < 0.024 and leader.elector is not None:
            client: Any = leader.elector._client

            def cut(*_a: Any, **_k: Any) -> Any:
                raise KubeUnavailable("lease renewals cut by chaos")

            client.replace = cut
            self.stats["cuts"] += 1
        elif roll < 0.05:
            op = rng.choice(FAULT_OPS)
            self.emu.faults.fail_next(op, status=rng.choice([500, 502, 503]), count=1)
            self.stats["faults"] += 1
        elif roll < 0.06:
            self.emu.faults.fail_next("create_volume", status=429, retry_after=1, count=1)
            self.stats["faults"] += 1
        elif roll < 0.07:
            self.emu.faults.error_on_create(count=1)
            self.stats["faults"] += 1
        elif roll < 0.075:
            self.emu.faults.set_latency("create_volume", rng.choice([0.0, 0.2, 1.0]))
            self.stats["faults"] += 1
        for r in self.replicas:
            if r.controller.crashed.is_set() and not r.finished.is_set():
                r.crash()


def run(cycles: int, seed: int, concurrency: int, out: Any, stall_seconds: float = 90.0) -> dict[str, Any]:
    """Run the harness and return the summary."""
    rng = random.Random(seed)  # noqa: S311 - reproducible chaos, not cryptography
    started = time.monotonic()
    with KubeSimulator() as sim, CinderEmulator(create_seconds=0.05, delete_seconds=0.05) as emu:
        h = Harness(sim, emu, rng, out)
        kube = KubeAdapter(sim.configuration(), qps=1000, burst=1000)
        for name, vtype in (("chaos-rbd", "rbd"), ("chaos-iscsi", "iscsi")):
            kube.create("storageclasses", objects.storage_class(name, {"type": vtype}))
        h.keep_two()
        created = deleted = 0
        active: dict[str, float] = {}  # claim name → creation time
        deleting: set[str] = set()
        duplicates = lost = 0
        last_report = time.monotonic()
        progress_at, progress = time.monotonic(), (0, 0)
        stalled = 0
        while deleted < cycles:
            if (created, deleted) != progress:
                progress_at, progress = time.monotonic(), (created, deleted)
            elif time.monotonic() - progress_at > stall_seconds:
                stalled = len(active)
                _dump_stall(sim, emu, active, out)
                break
            h.chaos_tick()
            h.keep_two()
            if created < cycles and len(active) < concurrency:
                name = f"claim-{created:05d}"
                sc = rng.choice(["chaos-rbd", "chaos-iscsi"])
                kube.create("persistentvolumeclaims", objects.claim(name, sc), namespace="default")
                active[name] = time.monotonic()
                created += 1
            pvcs = {p["metadata"]["name"]: p for p in sim.list("persistentvolumeclaims", "default")}
            for name in list(active):
                pvc = pvcs.get(name)
                if name in deleting:
                    if pvc is None:
                        del active[name]
                        deleting.discard(name)
                        deleted += 1
                    continue
                if pvc is None:
                    continue
                bound = (pvc.get("status") or {}).get("phase") == "Bound"
                mid_provision = not bound and rng.random() < 0.002
                if bound or mid_provision:
                    if bound:
                        d, lo = _check_bound(sim, emu, pvc)
                        duplicates += d
                        lost += lo
                    kube.delete("persistentvolumeclaims", name, namespace="default")
                    deleting.add(name)
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                print(
                    f"  created {created}, deleted {deleted}/{cycles}, replicas alive {len(h.alive())}, "
                    f"{h.stats}",
                    file=out,
                    flush=True,
                )
            time.sleep(0.02)
        # Quiesce: no more chaos; let the survivors finish and check nothing was left behind.
        emu.faults.clear()
        silent = _silent(sim, kube)
        deadline = time.monotonic() + 60
        leaked_list = _our_volumes(emu)
        while leaked_list and time.monotonic() < deadline:
            h.keep_two()
            time.sleep(0.2)
            leaked_list = _our_volumes(emu)
        leaked = len(leaked_list)
        for v in leaked_list:  # say what leaked, for the human reading the log
            md = v.get("metadata") or {}
            print(
                f"LEAKED {v['id']} status={v.get('status')} claim={md.get(names.META_PVC_NAME)} "
                f"uid={md.get(names.META_PVC_UID)} by={md.get(names.META_CREATED_BY)} "
                f"attachments={len(v.get('attachments') or [])}",
                file=out,
            )
        for r in h.alive():
            r.terminate()
        kube.close()
    return {
        "stalled": stalled,
        "leaked": leaked,
        "duplicates": duplicates,
        "lost": lost,
        "silent": silent,
        "cycles": cycles,
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        **h.stats,
        "replicas_started": h.counter,
    }


def _dump_stall(sim: KubeSimulator, emu: CinderEmulator, active: dict[str, float], out: Any) -> None:
    """Print what the claims that stopped making progress look like (for the human reading the log)."""
    print(f"STALLED: {len(active)} claims made no progress", file=out)
    pvcs = {p["metadata"]["name"]: p for p in sim.list("persistentvolumeclaims", "default")}
    for name in sorted(active)[:10]:
        pvc = pvcs.get(name)
        if pvc is None:
            print(f"  {name}: gone", file=out)
            continue
        meta = pvc["metadata"]
        uid = meta["uid"]
        vols = [
            (v["id"][:8], v.get("status"))
            for v in _our_volumes(emu)
            if (v.get("metadata") or {}).get(names.META_PVC_UID) == uid
        ]
        pv = sim.get("persistentvolumes", "", names.pv_name_for(uid))
        events = [
            (e["reason"], e["message"][:100])
            for e in sim.list("events")
            if e["involvedObject"].get("uid") == uid
        ]
        print(
            f"  {name}: phase={(pvc.get('status') or {}).get('phase')} "
            f"deleting={bool(meta.get('deletionTimestamp'))} "
            f"finalizers={meta.get('finalizers')} annotations={meta.get('annotations')} volumes={vols} "
            f"pv={(pv or {}).get('status')} events={events}",
            file=out,
        )


def _our_volumes(emu: CinderEmulator) -> list[dict[str, Any]]:
    return [v for v in emu.volumes() if (v.get("metadata") or {}).get(names.META_CLUSTER) == "chaos"]


def _check_bound(sim: KubeSimulator, emu: CinderEmulator, pvc: dict[str, Any]) -> tuple[int, int]:
    """(duplicate, lost) for a Bound claim: exactly one live volume, and it is the PV's."""
    uid = pvc["metadata"]["uid"]
    pv = sim.get("persistentvolumes", "", pvc["spec"].get("volumeName", ""))
    vid = ((pv or {}).get("metadata", {}).get("annotations") or {}).get(names.ANN_VOLUME_ID)
    live = [
        v
        for v in _our_volumes(emu)
        if (v.get("metadata") or {}).get(names.META_PVC_UID) == uid
        and v.get("status") not in ("deleting", "error")
    ]
    duplicate = 1 if len(live) > 1 else 0
    lost_ = 0 if vid and any(v["id"] == vid for v in live) else 1
    return duplicate, lost_


def _silent(sim: KubeSimulator, kube: KubeAdapter) -> int:
    """Claims still present that are neither Bound nor explained by a Warning event."""
    count = 0
    warned = {e["involvedObject"].get("uid") for e in sim.list("events") if e.get("type") == "Warning"}
    for pvc in sim.list("persistentvolumeclaims"):
        if (pvc.get("status") or {}).get("phase") == "Bound" or pvc["metadata"].get("deletionTimestamp"):
            continue
        if pvc["metadata"]["uid"] not in warned:
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry."""
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args(argv)
    logs.configure("critical")
    summary = run(args.cycles, args.seed, args.concurrency, sys.stderr)
    print(json.dumps(summary))
    bad = summary["leaked"] + summary["duplicates"] + summary["lost"] + summary["silent"] + summary["stalled"]
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
