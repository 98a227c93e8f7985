"""Serve the Kubernetes simulator and the Cinder emulator from their own process.

The benchmark runs the controller in one process and the test world in this one, so the controller's CPU
time and memory can be measured alone (``getrusage`` / ``/proc`` of the controller process). Prints one JSON
line with the endpoints, then serves until stdin closes.

Besides the two APIs it serves a small **control** endpoint (JSON over HTTP on loopback) for the benchmark,
so that nothing the benchmark itself does shows up in the simulators' request logs: claims and bound
PV/PVC pairs are written straight into the store, and the moments that matter (a claim became Bound, a PV
was created or deleted, the Lease changed hands) are recorded by a store listener as they commit, on
``time.monotonic`` — the same clock (``CLOCK_MONOTONIC``) as the benchmark process, so times compare.

| route | what |
|---|---|
| ``POST /class`` ``{"name", "parameters"}`` | a StorageClass served by us |
| ``POST /claims`` ``{"prefix", "count", "class"}`` | ``count`` claims in ``default`` (then waits idle) |
| ``POST /seed-bound`` ``{"count", "class"}`` | ``count`` PVs + claims as the controller leaves them, bound |
| ``POST /delete-claims`` ``{"prefix"}`` | delete those claims (the PV controller releases their PVs) |
| ``POST /latency`` ``{"operation", "seconds"}`` | Cinder operation latency |
| ``POST /clear-logs`` | empty both request logs |
| ``GET /state`` | counts (claims, bound, PVs, Cinder volumes), the Lease holder |
| ``GET /wait?what=W&count=N&timeout=S`` | block until N ``bound``, ``pvs_gone``, ``volumes_gone`` |
| ``GET /log`` | both request logs, volume id → name, claim uid → name |
| ``GET /moments`` | the recorded moments (bound, PV created / deleted, Lease holders) |
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from provisioner.domain import names
from provisioner.testworld import objects
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from provisioner.testworld.kube_sim import KubeSimulator
from provisioner.testworld.kube_sim.watchers import Change

Obj = dict[str, Any]
NAMESPACE = "default"


class Moments:
    """What the benchmark times, recorded under the store lock as changes commit (cheap, never blocks)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.bound_at: dict[str, float] = {}  # claim name → first moment it was Bound
        self.pv_created_at: dict[str, float] = {}
        self.pv_deleted_at: dict[str, float] = {}
        self.leases: list[tuple[float, str]] = []  # (moment, holderIdentity) at every holder change
        self.pvs = 0

    def on_change(self, change: Change) -> None:
        """Store listener."""
        now = time.monotonic()
        meta = change.new.get("metadata") or {}
        name = str(meta.get("name", ""))
        with self.cond:
            if change.resource == "core/persistentvolumeclaims":
                phase = (change.new.get("status") or {}).get("phase")
                if change.type != "DELETED" and phase == "Bound" and name not in self.bound_at:
                    self.bound_at[name] = now
            elif change.resource == "core/persistentvolumes":
                if change.type == "ADDED":
                    self.pv_created_at[name] = now
                    self.pvs += 1
                elif change.type == "DELETED":
                    self.pv_deleted_at[name] = now
                    self.pvs -= 1
            elif change.resource.endswith("/leases"):
                holder = str((change.new.get("spec") or {}).get("holderIdentity") or "")
                if not self.leases or self.leases[-1][1] != holder:
                    self.leases.append((now, holder))
            else:
                return
            self.cond.notify_all()


class World:
    """The simulator and the emulator of this process, and what the control endpoint does with them."""

    def __init__(self, sim: KubeSimulator, emu: CinderEmulator) -> None:
        self.sim = sim
        self.emu = emu
        self.moments = Moments()
        sim.store.add_listener(self.moments.on_change)

    # --- writes straight into the store (not in the request log) -------------------------------------

    def create_class(self, name: str, parameters: dict[str, str]) -> Obj:
        return self.sim.create("storageclasses", objects.storage_class(name, parameters))

    def create_claims(self, prefix: str, count: int, class_name: str) -> Obj:
        for i in range(count):
            self.sim.create(
                "persistentvolumeclaims", objects.claim(f"{prefix}{i:05d}", class_name), NAMESPACE
            )
        return {"created": count, "idle": self.sim.wait_idle(60.0 + count / 100)}

    def seed_bound(self, count: int, class_name: str) -> Obj:
        """``count`` claims with their PVs as the controller leaves them (CSI source, our annotations)."""
        for i in range(count):
            pvc = self.sim.create("persistentvolumeclaims", objects.claim(f"s{i:06d}", class_name), NAMESPACE)
            uid = pvc["metadata"]["uid"]
            self.sim.create("persistentvolumes", bound_pv(uid, pvc["metadata"]["name"], class_name))
        return {"seeded": count, "idle": self.sim.wait_idle(60.0 + count / 50)}

    def delete_claims(self, prefix: str) -> Obj:
        doomed = [
            o["metadata"]["name"]
            for o in self.sim.store.objects(_rt("persistentvolumeclaims"), NAMESPACE)
            if o["metadata"]["name"].startswith(prefix)
        ]
        for name in doomed:
            self.sim.delete("persistentvolumeclaims", NAMESPACE, name)
        return {"deleted": len(doomed)}

    # --- reads ----------------------------------------------------------------------------------------

    def state(self) -> Obj:
        claims = self.sim.store.objects(_rt("persistentvolumeclaims"), NAMESPACE)
        bound = sum(1 for c in claims if (c.get("status") or {}).get("phase") == "Bound")
        with self.moments.cond:
            holder = self.moments.leases[-1][1] if self.moments.leases else None
            pvs = self.moments.pvs
        return {
            "claims": len(claims),
            "bound": bound,
            "pvs": pvs,
            "volumes": len(self.emu.volumes()),
            "lease_holder": holder,
            "at": time.monotonic(),
        }

    def wait(self, what: str, count: int, timeout: float) -> Obj:
        """Block until ``count`` claims are Bound (``bound``) or no PV is left (``pvs_gone``)."""
        deadline = time.monotonic() + timeout
        m = self.moments
        with m.cond:
            while True:
                if what == "bound" and len(m.bound_at) >= count:
                    return {"ok": True, "at": max(m.bound_at.values(), default=time.monotonic())}
                if what == "pvs_gone" and m.pvs <= 0:
                    return {"ok": True, "at": max(m.pv_deleted_at.values(), default=time.monotonic())}
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"ok": False, "at": time.monotonic(), "bound": len(m.bound_at), "pvs": m.pvs}
                m.cond.wait(min(left, 0.5))

    def wait_volumes_gone(self, timeout: float) -> Obj:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.emu.volumes():
                return {"ok": True, "at": time.monotonic()}
            time.sleep(0.05)
        return {"ok": False, "at": time.monotonic(), "volumes": len(self.emu.volumes())}

    def log(self) -> Obj:
        kube = [[r.method, r.path, r.query, r.status, r.watch, r.at] for r in self.sim.requests]
        cinder = [
            [c.method, c.path, c.operation, c.status, c.at, c.result_id, _volume_hint(c.body)]
            for c in self.emu.calls()
        ]
        volumes = {v["id"]: v.get("name") or "" for v in self.emu.volumes()}
        claims = {
            c["metadata"]["uid"]: c["metadata"]["name"]
            for c in self.sim.store.objects(_rt("persistentvolumeclaims"), NAMESPACE)
        }
        return {"kube": kube, "cinder": cinder, "volumes": volumes, "claims": claims}

    def moments_doc(self) -> Obj:
        m = self.moments
        with m.cond:
            return {
                "bound_at": dict(m.bound_at),
                "pv_created_at": dict(m.pv_created_at),
                "pv_deleted_at": dict(m.pv_deleted_at),
                "leases": list(m.leases),
            }

    def clear_logs(self) -> Obj:
        self.sim.faults.clear_requests()
        self.emu.clear_calls()
        return {"cleared": True}


def _rt(plural: str) -> Any:
    from provisioner.testworld.kube_sim.simulator import resolve_resource

    return resolve_resource(plural)


def _volume_hint(body: Any) -> str | None:
    """The volume a Cinder request body names: a create's ``name`` or an attachment's ``volume_uuid``."""
    if not isinstance(body, dict):
        return None
    for key, field in (("volume", "name"), ("attachment", "volume_uuid")):
        inner = body.get(key)
        if isinstance(inner, dict) and isinstance(inner.get(field), str):
            return str(inner[field])
    return None


def bound_pv(claim_uid: str, claim_name: str, class_name: str) -> Obj:
    """A PV as the controller writes it for an RBD volume through our node agent, bound to the claim."""
    volume_id = str(uuid.uuid4())
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": names.pv_name_for(claim_uid),
            "annotations": {
                names.ANN_PROVISIONED_BY: names.DEFAULT_PROVISIONER_NAME,
                names.ANN_VOLUME_ID: volume_id,
                names.ANN_ATTACHMENT_ID: str(uuid.uuid4()),
                names.ANN_EXPORT_MODE: "attachment",
                names.ANN_CLOUD: "default",
            },
            "finalizers": [names.PV_VOLUME_FINALIZER],
        },
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": NAMESPACE,
                "name": claim_name,
                "uid": claim_uid,
            },
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": class_name,
            "volumeMode": "Filesystem",
            "csi": {
                "driver": names.CSI_DRIVER_NAME,
                "volumeHandle": volume_id,
                "fsType": "ext4",
                "volumeAttributes": {
                    "type": "rbd",
                    "pool": "volumes",
                    "image": f"volume-{volume_id}",
                    "monitors": "10.0.0.1:6789,10.0.0.2:6789,10.0.0.3:6789",
                    "user": "cinder",
                    "contentSource": "empty",
                    "growFs": "false",
                },
            },
        },
    }


def control_server(world: World) -> ThreadingHTTPServer:
    """The control endpoint on 127.0.0.1 (ephemeral port), not yet serving."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: stdout carries the endpoints line

        def _answer(self, doc: Obj, status: int = 200) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path == "/state":
                self._answer(world.state())
            elif url.path == "/wait":
                what, count, timeout = q.get("what", "bound"), int(q.get("count", "0")), float(q["timeout"])
                if what == "volumes_gone":
                    self._answer(world.wait_volumes_gone(timeout))
                else:
                    self._answer(world.wait(what, count, timeout))
            elif url.path == "/log":
                self._answer(world.log())
            elif url.path == "/moments":
                self._answer(world.moments_doc())
            else:
                self._answer({"error": f"no route {url.path}"}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            doc = json.loads(self.rfile.read(length) or b"{}")
            path = urlsplit(self.path).path
            if path == "/class":
                self._answer(world.create_class(doc["name"], doc.get("parameters") or {}))
            elif path == "/claims":
                self._answer(world.create_claims(doc["prefix"], int(doc["count"]), doc["class"]))
            elif path == "/seed-bound":
                self._answer(world.seed_bound(int(doc["count"]), doc["class"]))
            elif path == "/delete-claims":
                self._answer(world.delete_claims(doc["prefix"]))
            elif path == "/latency":
                world.emu.faults.set_latency(doc["operation"], float(doc["seconds"]))
                self._answer({"ok": True})
            elif path == "/clear-logs":
                self._answer(world.clear_logs())
            else:
                self._answer({"error": f"no route {path}"}, 404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def main() -> int:
    """Entry point: ``python -m provisioner.testworld.harness.world_server [--create-latency S] …``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--create-latency", type=float, default=0.0, help="seconds each create call takes")
    parser.add_argument("--create-seconds", type=float, default=0.0, help="creating → available delay")
    parser.add_argument("--kubeconfig", default=None, help="write a kubeconfig for the simulator here")
    args = parser.parse_args()
    with (
        KubeSimulator(history_limit=200_000) as sim,
        CinderEmulator(create_seconds=args.create_seconds) as emu,
    ):
        if args.create_latency:
            emu.faults.set_latency("create_volume", args.create_latency)
        if args.kubeconfig:
            sim.write_kubeconfig(args.kubeconfig)
        world = World(sim, emu)
        control = control_server(world)
        threading.Thread(target=control.serve_forever, name="world-control", daemon=True).start()
        host, port = control.server_address[:2]
        print(
            json.dumps(
                {
                    "kube": sim.url,
                    "keystone": emu.keystone_url,
                    "username": emu.username,
                    "password": emu.password,
                    "project_id": emu.project_id,
                    "control": f"http://{host!s}:{port}",
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # serve until the parent closes our stdin
        control.shutdown()
        control.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
