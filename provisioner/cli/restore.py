"""``cinder-provisioner restore (SNAPSHOT_ID | --backup BACKUP_ID | --from NS/VOLUMESNAPSHOT) --to NS/PVC``.

Creates the new claim and nothing else: ``spec.dataSource`` naming the VolumeSnapshot (``--from``, same
namespace, as Kubernetes requires without a ReferenceGrant), or the annotation
``netvol.io/restore-from-snapshot`` / ``netvol.io/restore-from-backup`` carrying the Cinder id. The
controller then applies its guard (the source must carry this cluster's tag and come from the claim's
namespace, unless the class allows raw restores) exactly as for a claim written by hand, so this command
cannot reach another tenant's data. Size and class default to the source's (Cinder is read for raw ids);
``--wait`` follows the claim until Bound, or prints the Warning of the final failure that stopped it.
"""

from __future__ import annotations

import argparse
from typing import Any

from provisioner.cli.backup_team import (
    ANN_RESTORE_FROM_BACKUP,
    SNAPSHOT_API,
    Obj,
    Refused,
    Session,
    Usage,
    add_connection_options,
    events_of,
    get_or_refuse,
    parse_ref,
    pv_of_volume,
    quantity_of,
    run_command,
    storage_class_of,
    watch_progress,
)
from provisioner.domain import names
from provisioner.domain.errors import CinderNotFound, InvalidInput, KubeNotFound
from provisioner.domain.model import BackupId, SnapshotId
from provisioner.domain.quantity import quantity_to_gib


def add_parser(sub: Any) -> None:
    p = sub.add_parser("restore", help="restore a snapshot or backup into a new claim")
    p.add_argument("snapshot_id", nargs="?", default=None, metavar="SNAPSHOT_ID", help="a Cinder snapshot id")
    p.add_argument("--backup", dest="backup_id", default=None, metavar="BACKUP_ID", help="a Cinder backup id")
    p.add_argument("--from", dest="from_ref", default=None, metavar="NAMESPACE/VOLUMESNAPSHOT")
    p.add_argument("--to", dest="to_ref", required=True, metavar="NAMESPACE/NEW_PVC")
    p.add_argument("--storage-class", default=None, help="class of the new claim (default: the source's)")
    p.add_argument("--size", default=None, help="size of the new claim, e.g. 10Gi (default: the source's)")
    p.add_argument("--access-mode", default="ReadWriteOnce", choices=("ReadWriteOnce", "ReadOnlyMany"))
    p.add_argument("--wait", action="store_true", help="wait until Bound, showing progress")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    add_connection_options(p)


def run(args: argparse.Namespace) -> int:
    def check() -> None:
        _check_args(args)
        parse_ref(args.to_ref, "--to")
        if args.from_ref:
            parse_ref(args.from_ref, "--from")

    return run_command(args, lambda session: restore(session, args), check=check)


def claim_body(
    namespace: str,
    name: str,
    *,
    storage_class: str,
    size: str,
    access_mode: str,
    annotations: dict[str, str] | None = None,
    data_source: Obj | None = None,
) -> Obj:
    """The PersistentVolumeClaim this command creates."""
    spec: Obj = {
        "accessModes": [access_mode],
        "storageClassName": storage_class,
        "resources": {"requests": {"storage": size}},
    }
    if data_source:
        spec["dataSource"] = data_source
    meta: Obj = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def _check_args(args: argparse.Namespace) -> str:
    given = [k for k in ("snapshot_id", "backup_id", "from_ref") if getattr(args, k)]
    if len(given) != 1:
        raise Usage(
            "give exactly one source: SNAPSHOT_ID, --backup BACKUP_ID or --from NAMESPACE/VOLUMESNAPSHOT"
        )
    source = given[0]
    if source != "from_ref" and not names.is_cinder_id(getattr(args, source)):
        what = "SNAPSHOT_ID" if source == "snapshot_id" else "--backup"
        raise Usage(f"{what}: {str(getattr(args, source))[:80]!r} is not a Cinder id")
    if args.size is not None:
        try:
            quantity_to_gib(args.size, field="--size")
        except InvalidInput as e:
            raise Usage(str(e)) from None
    if args.timeout <= 0:
        raise Usage("--timeout must be positive")
    return source


def _source_claim_of_volume(session: Session, volume_id: str, namespace: str) -> str | None:
    """The claim (in ``namespace``) whose PV holds ``volume_id``, for the default class."""
    pv = pv_of_volume(session, volume_id)
    ref = ((pv or {}).get("spec") or {}).get("claimRef") or {}
    return str(ref["name"]) if ref.get("namespace") == namespace and ref.get("name") else None


def restore(session: Session, args: argparse.Namespace) -> int:
    source = _check_args(args)
    namespace, name = parse_ref(args.to_ref, "--to")
    annotations: dict[str, str] = {}
    data_source: Obj | None = None
    size, source_claim = args.size, None
    if source == "from_ref":
        vs_ns, vs_name = parse_ref(args.from_ref, "--from")
        if vs_ns != namespace:
            raise Refused(
                f"--from {vs_ns}/{vs_name} is in another namespace than --to {namespace}/{name}: a claim "
                "can only be restored from a VolumeSnapshot in its own namespace"
            )
        vs = get_or_refuse(session, "volumesnapshots", vs_name, vs_ns, "VolumeSnapshot")
        data_source = {"apiGroup": SNAPSHOT_API, "kind": "VolumeSnapshot", "name": vs_name}
        source_claim = ((vs.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")
        size = size or (vs.get("status") or {}).get("restoreSize")
        if size is None and source_claim:
            try:
                pvc = session.kube.get("persistentvolumeclaims", source_claim, namespace=vs_ns)
                size = quantity_of(((pvc.get("spec") or {}).get("resources") or {}).get("requests"))
            except KubeNotFound:
                pass
    else:
        cinder = session.cinder(None) if (size is None or args.storage_class is None) else None
        if source == "snapshot_id":
            annotations[names.ANN_RESTORE_FROM_SNAPSHOT] = args.snapshot_id
            if cinder is not None:
                try:
                    snap = cinder.get_snapshot(SnapshotId(args.snapshot_id))
                except CinderNotFound:
                    raise Refused(f"Cinder snapshot {args.snapshot_id} does not exist") from None
                size = size or f"{snap.size_gib}Gi"
                source_claim = _source_claim_of_volume(session, snap.volume_id, namespace)
        else:
            annotations[ANN_RESTORE_FROM_BACKUP] = args.backup_id
            if cinder is not None:
                try:
                    backup = cinder.get_backup(BackupId(args.backup_id))
                except CinderNotFound:
                    raise Refused(f"Cinder backup {args.backup_id} does not exist") from None
                size = size or f"{backup.size_gib}Gi"
                source_claim = _source_claim_of_volume(session, backup.volume_id, namespace)
    storage_class = args.storage_class or storage_class_of(session, namespace, source_claim)
    if not storage_class:
        raise Refused(
            "no StorageClass to restore into (no source claim, no default class): use --storage-class"
        )
    if not size:
        raise Refused("the source's size is unknown: use --size")
    body = claim_body(
        namespace,
        name,
        storage_class=storage_class,
        size=str(size),
        access_mode=args.access_mode,
        annotations=annotations,
        data_source=data_source,
    )
    created = session.kube.create("persistentvolumeclaims", body, namespace=namespace)
    session.progress(f"persistentvolumeclaim {namespace}/{name} created (class {storage_class}, {size})")
    if not args.wait:
        print(f"{namespace}/{name}", file=session.out)
        return 0
    uid = created["metadata"]["uid"]
    for line in watch_progress(
        session, poll=lambda: _poll_claim(session, namespace, name, uid), timeout=args.timeout
    ):
        session.progress(f"  {line}")
    pvc = session.kube.get("persistentvolumeclaims", name, namespace=namespace)
    print(f"{namespace}/{name} Bound to {pvc['spec'].get('volumeName')}", file=session.out)
    return 0


def _poll_claim(session: Session, namespace: str, name: str, uid: str) -> tuple[str, str | None]:
    """(progress line, verdict): Bound = ok; a final failure recorded on the claim = its Warning."""
    try:
        pvc = session.kube.get("persistentvolumeclaims", name, namespace=namespace)
    except KubeNotFound:
        return "deleted", f"persistentvolumeclaim {namespace}/{name} was deleted"
    phase = (pvc.get("status") or {}).get("phase") or "Pending"
    events = events_of(session, uid)
    last = events[-1] if events else None
    said = f" — {last.get('type')} {last.get('reason')}: {last.get('message')}" if last else ""
    state = f"{phase}{said}"
    if phase == "Bound":
        return state, "ok"
    if (pvc["metadata"].get("annotations") or {}).get(names.ANN_FINAL_FAILURE):
        warnings = [e for e in events if e.get("type") == "Warning"]
        why = warnings[-1].get("message") if warnings else "the controller gave up (see kubectl describe)"
        return state, f"restore into {namespace}/{name} refused: {why}"
    return state, None


__all__ = ["add_parser", "claim_body", "run"]
