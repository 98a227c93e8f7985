"""Objects for the audit's table tests: Cinder records and the Kubernetes objects that reference them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provisioner.audit.decide import CloudInventory, KubeInventory, Observed, Options
from provisioner.domain import names
from provisioner.domain.model import AttachmentId, Snapshot, SnapshotId, Volume, VolumeId

NOW = 1_800_000_000.0
DAY = 86400.0
CLUSTER = "c1"


def options(**over: Any) -> Options:
    return Options(cluster_id=CLUSTER, default_cloud="default", now=NOW, **over)


def tags(
    uid: str, *, cluster: str | None = CLUSTER, ns: str = "default", name: str = "data"
) -> dict[str, str]:
    out = {
        names.META_PVC_UID: uid,
        names.META_PVC_NAMESPACE: ns,
        names.META_PVC_NAME: name,
        names.META_PV_NAME: f"pvc-{uid}",
        names.META_STORAGE_CLASS: "fast",
    }
    if cluster is not None:
        out[names.META_CLUSTER] = cluster
    return out


def vol(
    vid: str,
    uid: str = "",
    *,
    status: str = "in-use",
    size: int = 1,
    age: float = 2 * DAY,
    since: float | None = None,
    attachments: tuple[str, ...] = (),
    cluster: str | None = CLUSTER,
    metadata: dict[str, str] | None = None,
    name: str | None = None,
) -> Volume:
    return Volume(
        id=VolumeId(vid),
        name=name if name is not None else f"pvc-{uid or vid}",
        size_gib=size,
        status=status,
        volume_type="rbd",
        metadata=metadata if metadata is not None else (tags(uid, cluster=cluster) if uid else {}),
        attachment_ids=tuple(AttachmentId(a) for a in attachments),
        created_at=NOW - age,
        updated_at=None if since is None else NOW - since,
    )


def snap(sid: str, *, content: str = "", status: str = "available", age: float = 2 * DAY) -> Snapshot:
    md = {names.META_CLUSTER: CLUSTER}
    if content:
        md[names.META_CONTENT_NAME] = content
    return Snapshot(
        id=SnapshotId(sid),
        name=f"snapshot-{sid}",
        volume_id=VolumeId("v-src"),
        size_gib=1,
        status=status,
        metadata=md,
        created_at=NOW - age,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeBackup:
    """Shaped like provisioner.domain.model.Backup (created_at as Cinder's text, as there)."""

    id: str
    name: str = "backup"
    volume_id: str = "v-src"
    size_gib: int = 1
    status: str = "available"
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: str = "2027-01-13T00:00:00.000000"


def pv(
    uid: str,
    vid: str,
    *,
    phase: str = "Bound",
    reclaim: str = "Delete",
    capacity: str = "1Gi",
    attachment: str | None = None,
    cloud: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    ann = {names.ANN_VOLUME_ID: vid, names.ANN_PROVISIONED_BY: names.DEFAULT_PROVISIONER_NAME}
    if attachment:
        ann[names.ANN_ATTACHMENT_ID] = attachment
        ann[names.ANN_EXPORT_MODE] = "attachment"
    if cloud:
        ann[names.ANN_CLOUD] = cloud
    meta: dict[str, Any] = {"name": f"pvc-{uid}", "uid": f"pv-{uid}", "annotations": ann}
    if deleting:
        meta["deletionTimestamp"] = "2027-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "capacity": {"storage": capacity},
            "claimRef": {"namespace": "default", "name": "data", "uid": uid},
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": "fast",
        },
        "status": {"phase": phase},
    }


def pvc(uid: str, *, bound: bool = True, intent: bool = False, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "data", "namespace": "default", "uid": uid, "finalizers": []}
    if intent:
        meta["finalizers"] = [names.PVC_PROVISIONING_FINALIZER]
    if deleting:
        meta["deletionTimestamp"] = "2027-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"volumeName": f"pvc-{uid}" if bound else ""}}


def vsc(name: str, handle: str | None, *, pre: bool = False, deleting: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "driver": names.CSI_DRIVER_NAME,
        "deletionPolicy": "Delete",
        "volumeSnapshotRef": {"namespace": "default", "name": f"vs-{name}"},
        "source": {"snapshotHandle": handle} if pre and handle else {"volumeHandle": "v-src"},
    }
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2027-01-01T00:00:00Z"
    status = {"snapshotHandle": handle, "restoreSize": 1024**3} if handle and not pre else {}
    return {"metadata": meta, "spec": spec, "status": status}


def observed(
    volumes: list[Volume] | None = None,
    *,
    pvs: list[dict[str, Any]] | None = None,
    pvcs: list[dict[str, Any]] | None = None,
    contents: list[dict[str, Any]] | None = None,
    snapshots: list[Snapshot] | None = None,
    backups: list[Any] | None = None,
    earlier: KubeInventory | None = None,
    complete: bool = True,
) -> Observed:
    return Observed(
        clouds=[
            CloudInventory(
                cloud="default",
                volumes=volumes or [],
                snapshots=snapshots or [],
                backups=backups or [],
                complete=complete,
            )
        ],
        kube=KubeInventory(pvs=pvs or [], pvcs=pvcs or [], snapshot_contents=contents or [], earlier=earlier),
    )
