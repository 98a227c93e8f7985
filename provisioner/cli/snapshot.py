"""``cinder-provisioner snapshot create NAMESPACE/PVC [--name N] [--backup] [--class C] [--wait]``.

Creates a VolumeSnapshot of the claim on a VolumeSnapshotClass of our driver (``cinder.netvol.io``): one
whose ``parameters.type`` is ``backup`` with ``--backup``, else a plain snapshot class; the class marked
default wins when several fit. It is an ordinary Kubernetes object, so the snapshot controller and our
controller do the work (and apply their rules) exactly as for a VolumeSnapshot written by hand; nothing is
sent to Cinder from here. ``--wait`` follows it until ``readyToUse`` (or the error that stopped it).
"""

from __future__ import annotations

import argparse
from typing import Any

from provisioner.cli.backup_team import (
    DEFAULT_SNAPSHOT_CLASS,
    SNAPSHOT_API,
    Obj,
    Refused,
    Session,
    Usage,
    add_connection_options,
    get_or_refuse,
    list_all,
    parse_ref,
    run_command,
    stamp,
    watch_progress,
)
from provisioner.domain import names
from provisioner.domain.errors import KubeNotFound


def add_parser(sub: Any) -> None:
    p = sub.add_parser("snapshot", help="snapshot a claim (a VolumeSnapshot on the right class)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="create a VolumeSnapshot (or a backup) of NAMESPACE/PVC")
    c.add_argument("claim", metavar="NAMESPACE/PVC")
    c.add_argument("--name", default=None, help="VolumeSnapshot name (default: <pvc>-<UTC time>)")
    c.add_argument("--backup", action="store_true", help="a Cinder backup (class with type: backup)")
    c.add_argument("--class", dest="snapshot_class", default=None, help="VolumeSnapshotClass to use")
    c.add_argument("--wait", action="store_true", help="wait until readyToUse, showing progress")
    c.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    add_connection_options(c, cinder=False)


def run(args: argparse.Namespace) -> int:
    def check() -> None:
        namespace, _ = parse_ref(args.claim, "NAMESPACE/PVC")
        if args.name is not None:
            parse_ref(f"{namespace}/{args.name}", "--name")
        if args.timeout <= 0:
            raise Usage("--timeout must be positive")

    return run_command(args, lambda session: create(session, args), check=check)


def _kind_of(vsc: Obj) -> str:
    return str((vsc.get("parameters") or {}).get("type", "snapshot")).strip().lower() or "snapshot"


def choose_class(classes: list[Obj], *, backup: bool, wanted: str | None) -> str:
    """The VolumeSnapshotClass to use; Refused naming what is missing or ambiguous."""
    kind = "backup" if backup else "snapshot"
    ours = [c for c in classes if c.get("driver") == names.CSI_DRIVER_NAME]
    if wanted is not None:
        match = [c for c in ours if c["metadata"]["name"] == wanted]
        if not match:
            raise Refused(f"VolumeSnapshotClass {wanted!r} not found for driver {names.CSI_DRIVER_NAME}")
        if _kind_of(match[0]) != kind:
            raise Refused(f"VolumeSnapshotClass {wanted!r} makes {_kind_of(match[0])}s, not {kind}s")
        return wanted
    fitting = [c for c in ours if _kind_of(c) == kind]
    if not fitting:
        raise Refused(
            f"no VolumeSnapshotClass of driver {names.CSI_DRIVER_NAME} with type {kind}; "
            "create one (config/volumesnapshotclass-*.yaml) or name it with --class"
        )
    defaults = [
        c for c in fitting if (c["metadata"].get("annotations") or {}).get(DEFAULT_SNAPSHOT_CLASS) == "true"
    ]
    pick = defaults or fitting
    if len(pick) > 1:
        listed = ", ".join(sorted(c["metadata"]["name"] for c in pick))
        raise Refused(f"several VolumeSnapshotClasses make {kind}s ({listed}); choose one with --class")
    return str(pick[0]["metadata"]["name"])


def volume_snapshot(namespace: str, name: str, *, claim: str, snapshot_class: str) -> Obj:
    """The VolumeSnapshot object this command creates."""
    return {
        "apiVersion": f"{SNAPSHOT_API}/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "volumeSnapshotClassName": snapshot_class,
            "source": {"persistentVolumeClaimName": claim},
        },
    }


def create(session: Session, args: argparse.Namespace) -> int:
    namespace, claim = parse_ref(args.claim, "NAMESPACE/PVC")
    if args.timeout <= 0:
        raise Usage("--timeout must be positive")
    get_or_refuse(session, "persistentvolumeclaims", claim, namespace, "PersistentVolumeClaim")
    snapshot_class = choose_class(
        list_all(session, "volumesnapshotclasses"), backup=args.backup, wanted=args.snapshot_class
    )
    name = args.name or f"{claim}-{stamp(session.wall())}"
    parse_ref(f"{namespace}/{name}", "--name")
    body = volume_snapshot(namespace, name, claim=claim, snapshot_class=snapshot_class)
    session.kube.create("volumesnapshots", body, namespace=namespace)
    session.progress(f"volumesnapshot {namespace}/{name} created (class {snapshot_class})")
    if not args.wait:
        print(f"{namespace}/{name}", file=session.out)
        return 0

    def poll() -> tuple[str, str | None]:
        try:
            vs = session.kube.get("volumesnapshots", name, namespace=namespace)
        except KubeNotFound:
            return "deleted", f"volumesnapshot {namespace}/{name} was deleted"
        status = vs.get("status") or {}
        err = (status.get("error") or {}).get("message")
        content = status.get("boundVolumeSnapshotContentName") or "-"
        state = f"content={content} readyToUse={str(bool(status.get('readyToUse'))).lower()}"
        if err:
            return state, f"volumesnapshot {namespace}/{name} failed: {err}"
        return state, "ok" if status.get("readyToUse") is True else None

    for line in watch_progress(session, poll=poll, timeout=args.timeout):
        session.progress(f"  {line}")
    vs = session.kube.get("volumesnapshots", name, namespace=namespace)
    status = vs.get("status") or {}
    print(
        f"{namespace}/{name} ready: {status.get('boundVolumeSnapshotContentName')} "
        f"restoreSize={status.get('restoreSize') or '-'}",
        file=session.out,
    )
    return 0


__all__ = ["add_parser", "choose_class", "run", "volume_snapshot"]
