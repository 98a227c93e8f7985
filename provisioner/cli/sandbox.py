"""``cinder-provisioner sandbox``: the whole product on embedded defaults, on loopback, in one command.

Starts the Kubernetes API simulator and the Cinder emulator (or real Cinder with ``--cinder real``),
installs example StorageClasses (rbd csi, rbd in-tree, iscsi), creates PVCs, runs the real controller
(leader election on) against them, prints PVC → PV → Cinder volume → status, deletes everything again and
checks that no Cinder volume is left. Exit 0 only if every claim bound and every volume is gone; exit 2
with one line naming the option when an option is unusable (``--workdir`` that does not exist or is not a
writable directory, ``--pvcs`` outside 1..1000, ``--timeout`` not a finite positive number of seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

from provisioner.domain import names
from provisioner.domain.errors import ConfigError

MAX_PVCS = 1000

CLASSES: list[dict[str, Any]] = [
    {"name": "cinder-rbd", "parameters": {"type": "rbd", "volumeSource": "csi"}},
    {"name": "cinder-rbd-intree", "parameters": {"type": "rbd", "volumeSource": "in-tree"}},
    {"name": "cinder-iscsi", "parameters": {"type": "iscsi", "volumeSource": "csi"}},
]


def add_parser(sub: Any) -> None:
    """Register the ``sandbox`` subcommand."""
    p = sub.add_parser("sandbox", help="run everything on loopback with embedded defaults")
    p.add_argument("--pvcs", type=int, default=6, help="how many PVCs to create (default 6)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--keep", action="store_true", help="leave it running after provisioning (Ctrl-C ends)")
    p.add_argument("--cinder", choices=["emulator", "real"], default="emulator", help="which Cinder to use")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for Bound / deletion")
    p.add_argument("--workdir", default=None, help="directory for kubeconfig and state (default: a temp dir)")


@contextmanager
def _cinder(kind: str, workdir: Path) -> Iterator[dict[str, Any]]:
    """A cloud entry for the config, pointing at the emulator or at real Cinder."""
    if kind == "real":
        from provisioner.testworld.real_cinder.launcher import start_real_cinder

        with start_real_cinder(workdir / "cinder") as handle:
            yield {
                "auth_type": "noauth",
                "auth": {"endpoint": handle.url, "token": handle.token},
                "_describe": handle.url,
            }
        return
    from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
    from provisioner.testworld.objects import emulator_cloud

    with CinderEmulator(create_seconds=0.2, delete_seconds=0.1) as emu:
        yield {
            **emulator_cloud(emu.keystone_url, emu.username, emu.password, emu.project_id),
            "_describe": emu.cinder_url,
        }


def run(args: argparse.Namespace) -> int:
    """Run the sandbox; see the module docstring."""
    from provisioner.telemetry import logs

    try:
        check_options(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs.configure("warning")
    out: TextIO = sys.stdout
    started = time.monotonic()
    with ExitStack() as stack:
        workdir = (
            Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        summary = _run(args, workdir, stack, out)
    summary["seconds"] = round(time.monotonic() - started, 2)
    ok = summary["bound"] == args.pvcs and summary["deleted"] == args.pvcs and summary["leaked_volumes"] == 0
    if args.keep:
        ok = summary["bound"] == args.pvcs
    ok = ok and summary.get("snapshot_restore") == "ok"
    print(
        f"{'OK' if ok else 'FAILED'}: {summary['bound']}/{args.pvcs} bound, {summary['deleted']} deleted, "
        f"{summary['leaked_volumes']} leaked volumes in {summary['seconds']}s",
        file=out,
    )
    if args.json:
        print(json.dumps(summary), file=out)
    return 0 if ok else 1


def check_options(args: argparse.Namespace) -> None:
    """Refuse unusable options before anything starts; ``ConfigError`` names the option."""
    if not 1 <= args.pvcs <= MAX_PVCS:
        raise ConfigError("--pvcs", f"must be between 1 and {MAX_PVCS}, not {args.pvcs}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ConfigError("--timeout", f"must be a positive number of seconds, not {args.timeout}")
    if args.workdir is None:
        return
    workdir = Path(args.workdir)
    if not workdir.exists():
        raise ConfigError("--workdir", f"{args.workdir!r} does not exist (create it, or omit --workdir)")
    if not workdir.is_dir():
        raise ConfigError("--workdir", f"{args.workdir!r} is not a directory")
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError("--workdir", f"{args.workdir!r} is not writable")


def _run(args: argparse.Namespace, workdir: Path, stack: ExitStack, out: TextIO) -> dict[str, Any]:
    from provisioner.adapters.kube import KubeAdapter, load_client_configuration
    from provisioner.config.settings import ProvisionerConfig
    from provisioner.runtime.replica import Replica
    from provisioner.testworld import objects
    from provisioner.testworld.kube_sim import KubeSimulator

    sim = stack.enter_context(KubeSimulator())
    kubeconfig = sim.write_kubeconfig(workdir / "kubeconfig")
    cloud = dict(stack.enter_context(_cinder(args.cinder, workdir)))
    endpoint = cloud.pop("_describe")
    print(f"kubernetes simulator: {sim.url}  (kubeconfig {kubeconfig})", file=out)
    print(f"cinder ({args.cinder}): {endpoint}", file=out)
    config = ProvisionerConfig.from_mapping(
        {
            "cluster_id": "sandbox",
            "clouds": {"default": cloud},
            "default_cloud": "default",
            "namespace": "kube-system",
            "secret_namespace": "kube-system",
            "workers": 8,
            "leader_election": {"lease_duration": 4, "renew_deadline": 3, "retry_period": 1},
        }
    )
    replica = Replica(
        config,
        client_configuration=load_client_configuration(str(kubeconfig)),
        identity="sandbox-0",
        health_address="127.0.0.1:0",
    )
    stack.callback(replica.terminate)
    kube = KubeAdapter(load_client_configuration(str(kubeconfig)), qps=200, burst=400)
    stack.callback(kube.close)
    for sc in CLASSES:
        kube.create("storageclasses", objects.storage_class(sc["name"], sc["parameters"]))
    replica.start()
    port = replica.health.port if replica.health else 0
    print(f"controller: {replica.identity} (metrics on http://127.0.0.1:{port}/metrics)", file=out)
    claims = []
    for i in range(args.pvcs):
        sc = CLASSES[i % len(CLASSES)]["name"]
        name = f"data-{i:03d}"
        kube.create(
            "persistentvolumeclaims", objects.claim(name, sc, size=f"{1 + i % 3}Gi"), namespace="default"
        )
        claims.append(name)
    bound = _wait(lambda: _count_bound(kube), args.pvcs, args.timeout, "bound", out)
    cinder = next(iter(replica.controller.ctx.clouds.values()))
    rows = _table(kube, cinder)
    _print_table(rows, out)
    demo = _snapshot_and_restore(kube, cinder, claims[0], args.timeout, out) if bound else "no bound claim"
    if args.keep:
        print(
            f"\nkept running. kubectl --kubeconfig {kubeconfig} get pvc,pv   |   Cinder: {endpoint}", file=out
        )
        print("press Ctrl-C to stop", file=out)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        return {"bound": bound, "deleted": 0, "leaked_volumes": 0, "snapshot_restore": demo}
    if demo == "ok":
        demo = _give_back_snapshot(kube, cinder, claims[0], args.timeout, out)
    for name in claims:
        kube.delete("persistentvolumeclaims", name, namespace="default")
    deleted = _wait(lambda: args.pvcs - _count_pvs(kube), args.pvcs, args.timeout, "deleted", out)
    deadline = time.monotonic() + args.timeout
    leaked = _count_volumes(cinder)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.2)
        leaked = _count_volumes(cinder)
    print(f"cinder volumes left: {leaked}", file=out)
    return {"bound": bound, "deleted": deleted, "leaked_volumes": leaked, "snapshot_restore": demo}


SNAPSHOT_CLASS = "cinder-snapshots"


def _until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


def _snapshot_and_restore(kube: Any, cinder: Any, claim: str, timeout: float, out: TextIO) -> str:
    """VolumeSnapshot of ``claim`` (our controller cuts the Cinder snapshot) and a claim restored from it;
    "ok", or what went wrong."""
    from provisioner.domain.errors import KubeNotFound

    kube.create(
        "volumesnapshotclasses",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {"name": SNAPSHOT_CLASS},
            "driver": names.CSI_DRIVER_NAME,
            "deletionPolicy": "Delete",
        },
    )
    snap = f"{claim}-snap"
    kube.create(
        "volumesnapshots",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": snap, "namespace": "default"},
            "spec": {
                "volumeSnapshotClassName": SNAPSHOT_CLASS,
                "source": {"persistentVolumeClaimName": claim},
            },
        },
        namespace="default",
    )

    def status() -> dict[str, Any]:
        try:
            return dict(kube.get("volumesnapshots", snap, namespace="default").get("status") or {})
        except KubeNotFound:
            return {}

    if not _until(lambda: status().get("readyToUse") is True or status().get("error"), timeout):
        return f"VolumeSnapshot {snap} not ready after {timeout:g}s"
    if not status().get("readyToUse"):
        return f"VolumeSnapshot {snap}: {(status().get('error') or {}).get('message')}"
    content = kube.get("volumesnapshotcontents", status()["boundVolumeSnapshotContentName"])
    handle = (content.get("status") or {}).get("snapshotHandle")
    print(
        f"\nsnapshot: default/{snap} -> Cinder snapshot {handle} ({status().get('restoreSize')}), ready",
        file=out,
    )
    from provisioner.testworld import objects

    source = {"kind": "VolumeSnapshot", "name": snap, "apiGroup": "snapshot.storage.k8s.io"}
    restored = f"{claim}-restored"
    size = str(status().get("restoreSize") or "1Gi")
    kube.create(
        "persistentvolumeclaims",
        objects.claim(restored, CLASSES[0]["name"], size=size, data_source=source),
        namespace="default",
    )

    def phase() -> str:
        return str(
            (kube.get("persistentvolumeclaims", restored, namespace="default").get("status") or {}).get(
                "phase"
            )
        )

    if not _until(lambda: phase() == "Bound", timeout):
        return f"claim {restored} not Bound after {timeout:g}s"
    pvc = kube.get("persistentvolumeclaims", restored, namespace="default")
    pv = kube.get("persistentvolumes", pvc["spec"]["volumeName"])
    volume = cinder.get_volume(pv["metadata"]["annotations"][names.ANN_VOLUME_ID])
    if volume.snapshot_id != handle:
        return f"claim {restored} is volume {volume.id}, not restored from {handle}"
    print(
        f"restore:  default/{restored} -> Cinder volume {volume.id} from snapshot {handle}, Bound", file=out
    )
    return "ok"


def _give_back_snapshot(kube: Any, cinder: Any, claim: str, timeout: float, out: TextIO) -> str:
    """Delete the restored claim and the VolumeSnapshot; "ok" once the Cinder snapshot is gone."""
    from provisioner.domain.errors import KubeNotFound

    kube.delete("persistentvolumeclaims", f"{claim}-restored", namespace="default")
    kube.delete("volumesnapshots", f"{claim}-snap", namespace="default")
    tags = {names.META_CLUSTER: "sandbox"}
    if not _until(lambda: not list(cinder.list_snapshots(metadata=tags)), timeout):
        return "the Cinder snapshot was not deleted with its VolumeSnapshot"

    def restored_gone() -> bool:
        try:
            kube.get("persistentvolumeclaims", f"{claim}-restored", namespace="default")
        except KubeNotFound:
            return True
        return False

    if not _until(restored_gone, timeout):
        return "the restored claim was not deleted"
    print("snapshot and restored claim deleted: Cinder snapshot gone", file=out)
    return "ok"


def _wait(count: Any, target: int, timeout: float, what: str, out: TextIO) -> int:
    deadline = time.monotonic() + timeout
    last = -1
    n = count()
    while n < target and time.monotonic() < deadline:
        if n != last:
            print(f"  {what}: {n}/{target}", file=out, flush=True)
            last = n
        time.sleep(0.1)
        n = count()
    print(f"  {what}: {n}/{target}", file=out, flush=True)
    return int(n)


def _count_bound(kube: Any) -> int:
    items, _ = kube.list("persistentvolumeclaims")
    return sum(1 for p in items if (p.get("status") or {}).get("phase") == "Bound")


def _count_pvs(kube: Any) -> int:
    items, _ = kube.list("persistentvolumes")
    return len(items)


def _count_volumes(cinder: Any) -> int:
    return sum(1 for _ in cinder.list_volumes(metadata={names.META_CLUSTER: "sandbox"}))


def _table(kube: Any, cinder: Any) -> list[tuple[str, str, str, str, str]]:
    pvcs, _ = kube.list("persistentvolumeclaims")
    pvs = {p["metadata"]["name"]: p for p in kube.list("persistentvolumes")[0]}
    rows = []
    for pvc in sorted(pvcs, key=lambda p: p["metadata"]["name"]):
        pv_name = (pvc.get("spec") or {}).get("volumeName") or "-"
        pv = pvs.get(pv_name, {})
        vid = ((pv.get("metadata") or {}).get("annotations") or {}).get(names.ANN_VOLUME_ID, "-")
        status = cinder.get_volume(vid).status if vid != "-" else "-"
        rows.append(
            (
                f"default/{pvc['metadata']['name']}",
                pvc["spec"].get("storageClassName", ""),
                pv_name,
                vid,
                status,
            )
        )
    return rows


def _print_table(rows: list[tuple[str, str, str, str, str]], out: TextIO) -> None:
    header = ("PVC", "CLASS", "PV", "CINDER VOLUME", "STATUS")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)), file=out)
