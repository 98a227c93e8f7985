"""The audit's decision: Cinder's volumes, snapshots and backups against the cluster's objects (pure).

``audit(observed, options)`` is a function of what was listed and the time; no I/O, so every finding kind
is one line of a table test. What keeps it free of false positives while the controller works:

* **Claims in progress own their volume.** A volume whose claim (``netvol.io/pvc-uid``) still exists
  unbound, carries our intent finalizer or a create attempt is being provisioned or abandoned — never an
  orphan, never a duplicate (the provision flow resolves those itself).
* **Going away is not missing.** Volumes in ``deleting`` are never orphans; PVs being deleted (Released with
  ``Delete``, ``Failed``, or a deletionTimestamp) are not checked against Cinder (the delete flow removes
  the volume before the PV).
* **Two looks at Kubernetes, one at Cinder in between** (``KubeInventory.earlier``): a Cinder object is an
  orphan only if *neither* look shows what references it, and a PV is "missing" its volume only if *both*
  looks show it. A volume created or deleted while the audit listed can then never be misread.
* A cloud (or an object type) that could not be listed is reported as an error, and nothing is concluded
  from its absence (``CloudInventory.complete``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from provisioner.audit.model import (
    ACTIONS,
    BackupLike,
    CinderKind,
    Finding,
    Kind,
    Report,
    Scanned,
)
from provisioner.domain import names
from provisioner.domain.errors import InvalidInput
from provisioner.domain.model import Snapshot, Volume
from provisioner.domain.quantity import parse_quantity

Obj = dict[str, Any]
GIB = 1024**3

#: Transitional statuses: reported as ``stuck`` once older than the threshold.
STUCK_STATUSES = frozenset(
    {
        "creating",
        "deleting",
        "error_deleting",
        "attaching",
        "detaching",
        "extending",
        "restoring",
        "restoring-backup",
        "downloading",
        "backing-up",
        "maintenance",
        "retyping",
        "reserved",
    }
)
#: Failed statuses: reported at once (after the threshold while a claim in progress may still replace it).
ERROR_STATUSES = frozenset(
    {"error", "error_restoring", "error_extending", "error_managing", "error_backing-up"}
)
GOING = frozenset({"deleting", "error_deleting"})
#: Statuses in which a volume's size may legitimately disagree with its PV for a moment.
RESIZING = frozenset({"extending"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudInventory:
    """What one cloud listed. ``complete`` False: a list failed, so absences prove nothing here."""

    cloud: str
    volumes: Sequence[Volume] = ()
    snapshots: Sequence[Snapshot] = ()
    backups: Sequence[BackupLike] = ()
    complete: bool = True
    snapshots_complete: bool = True
    backups_complete: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeInventory:
    """The cluster's objects, as listed after Cinder; ``earlier`` the same lists read before Cinder."""

    pvs: Sequence[Obj] = ()
    pvcs: Sequence[Obj] = ()
    snapshot_contents: Sequence[Obj] = ()
    earlier: KubeInventory | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What to audit and how strictly."""

    cluster_id: str
    default_cloud: str
    now: float  # wall clock, Unix seconds
    provisioner_name: str = names.DEFAULT_PROVISIONER_NAME
    #: Also report volumes tagged for other clusters.
    all_clusters: bool = False
    #: Also report ``pvc-*`` volumes that carry no cluster tag at all.
    untagged: bool = False
    #: A transitional status (creating, deleting …) older than this is ``stuck``.
    stuck_after_seconds: float = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """Everything the decision reads."""

    clouds: Sequence[CloudInventory]
    kube: KubeInventory
    errors: Sequence[str] = ()


# ---- reading the Kubernetes side ------------------------------------------------------------------


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.get("metadata") or {}
    return meta


def _ann(obj: Obj) -> Mapping[str, str]:
    ann: Mapping[str, str] = _meta(obj).get("annotations") or {}
    return ann


def pv_volume(pv: Obj, provisioner_name: str) -> str | None:
    """The Cinder volume id of one of our PVs (annotation, else our CSI volumeHandle), or None."""
    vid = _ann(pv).get(names.ANN_VOLUME_ID)
    if vid:
        return str(vid)
    spec = pv.get("spec") or {}
    csi = spec.get("csi") or {}
    if csi.get("driver") == names.CSI_DRIVER_NAME and csi.get("volumeHandle"):
        return str(csi["volumeHandle"])
    return None


def pv_cloud(pv: Obj, default_cloud: str) -> str:
    return str(_ann(pv).get(names.ANN_CLOUD) or default_cloud)


def pv_deleting(pv: Obj) -> bool:
    """The delete flow owns this PV now (its volume may be gone before it is)."""
    spec = pv.get("spec") or {}
    phase = (pv.get("status") or {}).get("phase")
    if _meta(pv).get("deletionTimestamp") or phase == "Failed":
        return True
    return phase == "Released" and spec.get("persistentVolumeReclaimPolicy", "Delete") == "Delete"


def claim_in_progress(pvc: Obj) -> bool:
    """The provision (or abandon) flow still owns whatever volume this claim has in Cinder.

    Its intent finalizer says so, or it is neither bound nor deleted yet. (The ``create-attempt`` mark
    says nothing here: it stays on a claim after its release, as the proof that a create happened.)
    """
    meta = _meta(pvc)
    if names.PVC_PROVISIONING_FINALIZER in (meta.get("finalizers") or []):
        return True
    return not (pvc.get("spec") or {}).get("volumeName") and not meta.get("deletionTimestamp")


def content_handle(vsc: Obj) -> str | None:
    """The Cinder snapshot / backup id a VolumeSnapshotContent stands for (status, else pre-provisioned)."""
    handle = (vsc.get("status") or {}).get("snapshotHandle") or (
        (vsc.get("spec") or {}).get("source") or {}
    ).get("snapshotHandle")
    return str(handle) if handle else None


def is_our_content(vsc: Obj, provisioner_name: str) -> bool:
    return (vsc.get("spec") or {}).get("driver") in (names.CSI_DRIVER_NAME, provisioner_name)


def _capacity_bytes(pv: Obj) -> int | None:
    raw = ((pv.get("spec") or {}).get("capacity") or {}).get("storage")
    if raw is None:
        return None
    try:
        return int(parse_quantity(str(raw)))
    except InvalidInput:
        return None


def _capacity_gib(pv: Obj) -> int:
    b = _capacity_bytes(pv)
    return 0 if b is None else -(-b // GIB)


def to_epoch(raw: Any) -> float | None:
    """A timestamp as the model carries it (Unix seconds, or Cinder's ISO text) → Unix seconds."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, int | float):
        return float(raw)
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


# ---- the decision ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Refs:
    """What references Cinder objects, over both looks at Kubernetes (union)."""

    volumes: set[tuple[str, str]] = field(default_factory=set)
    pending_claims: set[str] = field(default_factory=set)
    live_claims: set[str] = field(default_factory=set)
    handles: set[str] = field(default_factory=set)
    content_names: set[str] = field(default_factory=set)


def _refs(looks: Iterable[KubeInventory], o: Options) -> _Refs:
    r = _Refs()
    for look in looks:
        for pv in look.pvs:
            vid = pv_volume(pv, o.provisioner_name)
            if vid:
                r.volumes.add((pv_cloud(pv, o.default_cloud), vid))
        for pvc in look.pvcs:
            uid = _meta(pvc).get("uid")
            if uid:
                r.live_claims.add(str(uid))
                if claim_in_progress(pvc):
                    r.pending_claims.add(str(uid))
        for vsc in look.snapshot_contents:
            r.content_names.add(str(_meta(vsc).get("name") or ""))
            handle = content_handle(vsc)
            if handle:
                r.handles.add(handle)
    return r


def _stable(items: Sequence[Obj], earlier: Sequence[Obj] | None) -> list[Obj]:
    """Objects present (same uid) in both looks; the later version."""
    if earlier is None:
        return list(items)
    seen = {(_meta(o).get("name"), _meta(o).get("uid")) for o in earlier}
    return [o for o in items if (_meta(o).get("name"), _meta(o).get("uid")) in seen]


def _scope(metadata: Mapping[str, str], name: str, o: Options) -> str | None:
    """Whose object this is for the audit: our cluster's, another's (--all-clusters), untagged, or None."""
    cluster = metadata.get(names.META_CLUSTER)
    if cluster == o.cluster_id:
        return cluster
    if cluster and o.all_clusters:
        return cluster
    if not cluster and o.untagged and name.startswith("pvc-"):
        return ""
    return None


class _Builder:
    def __init__(self, o: Options) -> None:
        self.o = o
        self.out: list[Finding] = []

    def add(self, kind: Kind, *, cloud: str, detail: str, **fields: Any) -> None:
        self.out.append(Finding(kind=kind, cloud=cloud, detail=detail, action=ACTIONS[kind], **fields))

    def age(self, created: Any) -> float | None:
        t = to_epoch(created)
        return None if t is None else max(0.0, self.o.now - t)

    def stuck(
        self,
        *,
        cloud: str,
        cinder_kind: CinderKind,
        obj: Any,
        pending: bool,
        cluster: str,
        extra: Mapping[str, Any],
    ) -> None:
        status = str(obj.status)
        since = to_epoch(getattr(obj, "updated_at", None)) or to_epoch(obj.created_at)
        in_status = None if since is None else self.o.now - since
        late = in_status is not None and in_status > self.o.stuck_after_seconds
        if status in STUCK_STATUSES and late:
            why = f"{status} for {in_status:.0f} s (threshold {self.o.stuck_after_seconds:.0f} s)"
        elif status in ERROR_STATUSES and (late or not pending):
            why = f"in {status}"
        else:
            return
        self.add(
            Kind.STUCK,
            cloud=cloud,
            cinder_kind=cinder_kind,
            cinder_id=str(obj.id),
            cinder_name=str(obj.name),
            cinder_status=status,
            age_seconds=self.age(obj.created_at),
            size_gib=int(obj.size_gib),
            cluster=cluster,
            detail=f"{cinder_kind} {why}",
            **extra,
        )


def audit(observed: Observed, o: Options) -> Report:
    """Every finding, sorted (kind, cloud, Cinder id, Kubernetes object)."""
    kube = observed.kube
    looks = [kube] + ([kube.earlier] if kube.earlier is not None else [])
    refs = _refs(looks, o)
    b = _Builder(o)
    earlier = kube.earlier
    pvs = _stable(kube.pvs, earlier.pvs if earlier else None)
    contents = _stable(kube.snapshot_contents, earlier.snapshot_contents if earlier else None)

    volumes: dict[tuple[str, str], Volume] = {}
    for inv in observed.clouds:
        for v in inv.volumes:
            volumes[(inv.cloud, v.id)] = v
    complete = {inv.cloud for inv in observed.clouds if inv.complete}

    _volume_side(observed, o, refs, b)
    claims = {str(_meta(c).get("uid")): c for c in kube.pvcs}
    earlier_pvs = {str(_meta(p).get("uid")): p for p in (earlier.pvs if earlier else ())}
    _pv_side(pvs, o, volumes, complete, claims, b, earlier_pvs)
    _snapshot_side(observed, o, refs, contents, b)
    findings = tuple(sorted(b.out, key=Finding.sort_key))
    return Report(
        cluster_id=o.cluster_id,
        clouds=tuple(inv.cloud for inv in observed.clouds),
        generated_at=o.now,
        findings=findings,
        scanned=Scanned(
            volumes=sum(len(i.volumes) for i in observed.clouds),
            snapshots=sum(len(i.snapshots) for i in observed.clouds),
            backups=sum(len(i.backups) for i in observed.clouds),
            persistent_volumes=len(kube.pvs),
            claims=len(kube.pvcs),
            snapshot_contents=len(kube.snapshot_contents),
        ),
        errors=tuple(observed.errors),
    )


def _volume_side(observed: Observed, o: Options, refs: _Refs, b: _Builder) -> None:
    by_claim: dict[str, list[tuple[str, Volume]]] = defaultdict(list)
    for inv in observed.clouds:
        for v in inv.volumes:
            cluster = _scope(v.metadata, v.name, o)
            if cluster is None:
                continue
            uid = v.metadata.get(names.META_PVC_UID, "")
            pending = bool(uid) and uid in refs.pending_claims
            extra = {
                "storage_class": v.metadata.get(names.META_STORAGE_CLASS, ""),
                "volume_type": v.volume_type or "",
                "k8s_kind": "PersistentVolumeClaim" if uid else "",
                "k8s_namespace": v.metadata.get(names.META_PVC_NAMESPACE, ""),
                "k8s_name": v.metadata.get(names.META_PVC_NAME, ""),
            }
            b.stuck(
                cloud=inv.cloud, cinder_kind="volume", obj=v, pending=pending, cluster=cluster, extra=extra
            )
            if v.status in GOING or (inv.cloud, v.id) in refs.volumes:
                continue
            if uid:
                by_claim[uid].append((inv.cloud, v))
            if pending:
                continue
            if uid and uid in refs.live_claims:
                continue  # decided below: a duplicate of the volume its claim's PV uses (or an orphan)
            b.add(
                Kind.ORPHAN_VOLUME,
                cloud=inv.cloud,
                cinder_id=v.id,
                cinder_name=v.name,
                cinder_status=v.status,
                age_seconds=b.age(v.created_at),
                size_gib=v.size_gib,
                cluster=cluster,
                attachments=len(v.attachment_ids),
                detail=_orphan_detail(v, cluster, o),
                **extra,
            )
    # Volumes of a live, no longer pending claim that no PV references: extra copies of its volume.
    for uid, items in by_claim.items():
        if uid in refs.pending_claims or uid not in refs.live_claims:
            continue
        for cloud, v in items:
            b.add(
                Kind.DUPLICATE,
                cloud=cloud,
                cinder_id=v.id,
                cinder_name=v.name,
                cinder_status=v.status,
                age_seconds=b.age(v.created_at),
                size_gib=v.size_gib,
                cluster=v.metadata.get(names.META_CLUSTER, ""),
                attachments=len(v.attachment_ids),
                storage_class=v.metadata.get(names.META_STORAGE_CLASS, ""),
                volume_type=v.volume_type or "",
                k8s_kind="PersistentVolumeClaim",
                k8s_namespace=v.metadata.get(names.META_PVC_NAMESPACE, ""),
                k8s_name=v.metadata.get(names.META_PVC_NAME, ""),
                detail=f"claim uid {uid} is bound, but no PV references this volume of it",
            )


def _orphan_detail(v: Volume, cluster: str, o: Options) -> str:
    attached = f"; attached ({len(v.attachment_ids)} attachment(s))" if v.attachment_ids else ""
    if cluster == "":
        return f"no cluster tag, named like ours ({v.name}), no PV references it{attached}"
    if cluster != o.cluster_id:
        return f"tagged for cluster {cluster}; no PV of this cluster references it{attached}"
    return f"no PV references it and its claim is gone{attached}"


def _pv_side(  # noqa: PLR0917 - one private call site
    pvs: Sequence[Obj],
    o: Options,
    volumes: Mapping[tuple[str, str], Volume],
    complete: set[str],
    claims: Mapping[str, Obj],
    b: _Builder,
    earlier_pvs: Mapping[str, Obj],
) -> None:
    """PV-side findings; ``earlier_pvs`` (uid → the PV as the look before Cinder saw it) tells a PV the
    expand flow resized during the audit (its capacity changed between the looks) from a drift."""
    for pv in pvs:
        vid = pv_volume(pv, o.provisioner_name)
        if not vid:
            continue
        cloud = pv_cloud(pv, o.default_cloud)
        meta, spec = _meta(pv), pv.get("spec") or {}
        claim = spec.get("claimRef") or {}
        common: dict[str, Any] = {
            "cinder_id": vid,
            "k8s_kind": "PersistentVolume",
            "k8s_name": str(meta.get("name") or ""),
            "storage_class": str(spec.get("storageClassName") or ""),
        }
        v = volumes.get((cloud, vid))
        retained = (pv.get("status") or {}).get("phase") == "Released" and spec.get(
            "persistentVolumeReclaimPolicy"
        ) == "Retain"
        if retained:
            b.add(
                Kind.RELEASED_RETAINED,
                cloud=cloud,
                cinder_name=v.name if v else "",
                cinder_status=v.status if v else "",
                size_gib=v.size_gib if v else _capacity_gib(pv),
                volume_type=(v.volume_type or "") if v else "",
                age_seconds=b.age(v.created_at) if v else None,
                detail=f"Released, kept by reclaimPolicy Retain (was {claim.get('namespace')}/"
                f"{claim.get('name')})",
                **common,
            )
        if pv_deleting(pv) or cloud not in complete:
            continue
        if v is None or v.status in GOING:
            b.add(
                Kind.MISSING_VOLUME,
                cloud=cloud,
                cinder_status=v.status if v else "",
                size_gib=_capacity_gib(pv),
                detail=f"Cinder volume {vid} is {'being deleted' if v else 'gone'}",
                **common,
            )
            continue
        base = {
            **common,
            "cinder_name": v.name,
            "cinder_status": v.status,
            "age_seconds": b.age(v.created_at),
            "size_gib": v.size_gib,
            "volume_type": v.volume_type or "",
            "cluster": v.metadata.get(names.META_CLUSTER, ""),
            "attachments": len(v.attachment_ids),
        }
        _wrong_volume(pv=pv, v=v, claim=claim, o=o, b=b, cloud=cloud, base=base)
        want = _capacity_bytes(pv)
        before = earlier_pvs.get(str(meta.get("uid")))
        resized_meanwhile = before is not None and _capacity_bytes(before) != want  # the flow's last step
        resizing = (
            v.status in RESIZING or resized_meanwhile or _claim_grows(claims.get(str(claim.get("uid"))), want)
        )
        if want is not None and not resizing and want != v.size_gib * GIB:
            b.add(
                Kind.SIZE_DRIFT,
                cloud=cloud,
                detail=f"PV capacity {spec['capacity']['storage']} but the Cinder volume has "
                f"{v.size_gib} GiB",
                **base,
            )
        recorded = _ann(pv).get(names.ANN_ATTACHMENT_ID)
        attached = set(v.attachment_ids)
        problems = []
        if recorded and recorded not in attached:
            problems.append(f"the PV's attachment {recorded} is gone from Cinder")
        extra = sorted(attached - {recorded} if recorded else attached)
        if extra:
            problems.append(f"Cinder attachment(s) {', '.join(extra)} not referenced by the PV")
        if problems:
            b.add(Kind.ATTACHMENT_DRIFT, cloud=cloud, detail="; ".join(problems), **base)


def _claim_grows(pvc: Obj | None, capacity: int | None) -> bool:
    """The bound claim asks for more than its PV has: an expansion is under way (Cinder first, PV last)."""
    if pvc is None or capacity is None:
        return False
    raw = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    try:
        return raw is not None and int(parse_quantity(str(raw))) > capacity
    except InvalidInput:
        return False


def _wrong_volume(
    *,
    pv: Obj,
    v: Volume,
    claim: Mapping[str, Any],
    o: Options,
    b: _Builder,
    cloud: str,
    base: Mapping[str, Any],
) -> None:
    tag_cluster = v.metadata.get(names.META_CLUSTER)
    tag_uid = v.metadata.get(names.META_PVC_UID)
    why = None
    if not tag_cluster:
        why = "the volume carries no cluster tag"
    elif tag_cluster != o.cluster_id:
        why = f"the volume is tagged for cluster {tag_cluster}"
    elif tag_uid and claim.get("uid") and tag_uid != claim.get("uid"):
        why = f"the volume is tagged for claim uid {tag_uid}, the PV is bound to {claim.get('uid')}"
    if why:
        b.add(Kind.WRONG_VOLUME, cloud=cloud, detail=why, **base)


def _snapshot_side(observed: Observed, o: Options, refs: _Refs, contents: Sequence[Obj], b: _Builder) -> None:
    snaps: dict[str, str] = {}
    backups: dict[str, str] = {}
    lists_complete = all(i.snapshots_complete and i.backups_complete for i in observed.clouds)
    for inv in observed.clouds:
        for s in inv.snapshots:
            snaps[s.id] = inv.cloud
            _cinder_object(
                cloud=inv.cloud,
                cinder_kind="snapshot",
                obj=s,
                orphan=Kind.ORPHAN_SNAPSHOT,
                o=o,
                refs=refs,
                b=b,
            )
        for bk in inv.backups:
            backups[str(bk.id)] = inv.cloud
            _cinder_object(
                cloud=inv.cloud, cinder_kind="backup", obj=bk, orphan=Kind.ORPHAN_BACKUP, o=o, refs=refs, b=b
            )
    if not lists_complete:
        return
    for vsc in contents:
        handle = content_handle(vsc)
        if not handle or not is_our_content(vsc, o.provisioner_name) or _meta(vsc).get("deletionTimestamp"):
            continue
        if handle in snaps or handle in backups:
            continue
        ref = (vsc.get("spec") or {}).get("volumeSnapshotRef") or {}
        b.add(
            Kind.MISSING_SNAPSHOT,
            cloud=o.default_cloud if len(observed.clouds) != 1 else observed.clouds[0].cloud,
            cinder_kind="snapshot",
            cinder_id=handle,
            k8s_kind="VolumeSnapshotContent",
            k8s_name=str(_meta(vsc).get("name") or ""),
            size_gib=-(-int((vsc.get("status") or {}).get("restoreSize") or 0) // GIB),
            detail=f"neither a Cinder snapshot nor a backup {handle} exists (VolumeSnapshot "
            f"{ref.get('namespace')}/{ref.get('name')})",
        )


def _cinder_object(
    *, cloud: str, cinder_kind: CinderKind, obj: Any, orphan: Kind, o: Options, refs: _Refs, b: _Builder
) -> None:
    metadata: Mapping[str, str] = obj.metadata
    cluster = metadata.get(names.META_CLUSTER)
    if not cluster or not (cluster == o.cluster_id or o.all_clusters):
        return
    content = metadata.get(names.META_CONTENT_NAME, "")
    extra = {
        "k8s_kind": "VolumeSnapshotContent" if content else "",
        "k8s_name": content,
        "storage_class": "",
    }
    pending = bool(content) and content in refs.content_names
    b.stuck(cloud=cloud, cinder_kind=cinder_kind, obj=obj, pending=pending, cluster=cluster, extra=extra)
    if obj.status in GOING or str(obj.id) in refs.handles or pending:
        return
    where = "" if cluster == o.cluster_id else f"tagged for cluster {cluster}; "
    b.add(
        orphan,
        cloud=cloud,
        cinder_kind=cinder_kind,
        cinder_id=str(obj.id),
        cinder_name=str(obj.name),
        cinder_status=str(obj.status),
        age_seconds=b.age(obj.created_at),
        size_gib=int(obj.size_gib),
        cluster=cluster,
        detail=f"{where}no VolumeSnapshotContent references this {cinder_kind}",
        **extra,
    )
