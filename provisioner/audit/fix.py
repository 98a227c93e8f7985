"""``--fix``: delete orphans, safely. A pure plan, a pure re-check, and a dull executor.

The rules (each has a test): only the kinds asked for and only ``orphan-*``; only objects carrying *our*
cluster tag (never untagged ones, never another cluster's); only older than the grace period (default 24 h;
an object whose age Cinder did not report is never old enough); never an attached volume. Right before each
delete the object is read again, with the Kubernetes objects that could claim it: the Cinder object itself
(still there, still ours, still not attached, not in use), the PV named in its tags and any PV referencing
it (from a fresh list), the claim named in its tags (a claim that appeared means provisioning is under
way), the VolumeSnapshotContent named in its tags. Without ``--yes`` nothing is deleted: the same checks
run and the result says ``would-delete``. Deletes run at most ``max_workers`` at a time and each is logged
with Cinder's request id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog

from provisioner.audit.decide import (
    Options,
    claim_in_progress,
    content_handle,
    pv_cloud,
    pv_volume,
    to_epoch,
)
from provisioner.audit.model import FIXABLE, Finding, Kind
from provisioner.domain import names
from provisioner.domain.errors import CinderError, CinderNotFound, KubeError, KubeNotFound
from provisioner.domain.model import BackupId, SnapshotId, VolumeId
from provisioner.ports import CinderPort

log = structlog.get_logger(__name__)
Obj = dict[str, Any]
DEFAULT_GRACE_SECONDS = 24 * 3600.0
#: Volume statuses that mean "someone uses it" whatever the attachment list says.
IN_USE = frozenset({"in-use", "attaching", "reserved", "detaching"})
DELETABLE = frozenset({"available", "error", "error_restoring", "error_extending", "error_managing"})


class KubeReader(Protocol):
    """Reads for the re-check (``provisioner.adapters.kube.KubeAdapter``)."""

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> Obj: ...

    def list(self, resource: str) -> tuple[list[Obj], str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FixOptions:
    kinds: frozenset[Kind]
    cluster_id: str
    now: float
    grace_seconds: float = DEFAULT_GRACE_SECONDS


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    finding: Finding


@dataclass(frozen=True, slots=True, kw_only=True)
class Skip:
    finding: Finding
    reason: str


Planned = Delete | Skip


def plan(findings: Sequence[Finding], o: FixOptions) -> list[Planned]:
    """Which findings ``--fix`` acts on, and why each other one of the asked kinds is left alone."""
    out: list[Planned] = []
    for f in findings:
        if f.kind not in o.kinds or f.kind not in FIXABLE:
            continue
        reason = _refusal(f, o)
        out.append(Skip(finding=f, reason=reason) if reason else Delete(finding=f))
    return out


def _refusal(f: Finding, o: FixOptions) -> str | None:
    if f.cluster != o.cluster_id:
        who = f"cluster {f.cluster}" if f.cluster else "no cluster tag"
        return f"not tagged for this cluster ({who})"
    if f.age_seconds is None:
        return "age unknown (Cinder reported no created_at)"
    if f.age_seconds < o.grace_seconds:
        return f"younger than the grace period ({f.age_seconds:.0f} s < {o.grace_seconds:.0f} s)"
    if f.attachments:
        return "attached"
    return None


# ---- the re-check, right before the delete ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Fresh:
    """What was read again for one finding."""

    obj: Any  # the Cinder object now (None = gone)
    pv_names: frozenset[str]  # PVs (fresh list + the one named in the tags, if it exists) referencing it
    claim: Obj | None  # the claim named in its tags, now
    content_exists: bool  # the VolumeSnapshotContent named in its tags exists
    handle_referenced: bool  # a VolumeSnapshotContent's handle names it


def recheck(f: Finding, fresh: Fresh, o: FixOptions) -> str | None:
    """None when the object is still an orphan that may go; else why it stays."""
    obj = fresh.obj
    if obj is None:
        return "already gone"
    metadata: Mapping[str, str] = obj.metadata
    if metadata.get(names.META_CLUSTER) != o.cluster_id:
        return "no longer tagged for this cluster"
    created = to_epoch(obj.created_at)
    if created is None or o.now - created < o.grace_seconds:
        return "younger than the grace period"
    if f.cinder_kind == "volume":
        if obj.attachment_ids or obj.status in IN_USE:
            return f"attached ({obj.status})"
        if obj.status not in DELETABLE:
            return f"status {obj.status}"
        if fresh.pv_names:
            return f"PV {', '.join(sorted(fresh.pv_names))} references it"
        claim = fresh.claim
        if claim is not None and (claim.get("metadata") or {}).get("uid") == metadata.get(names.META_PVC_UID):
            if claim_in_progress(claim):
                return "its claim is being provisioned"
            return "its claim exists"
        return None
    if obj.status not in ("available", "error"):
        return f"status {obj.status}"
    if fresh.handle_referenced:
        return "a VolumeSnapshotContent references it"
    if fresh.content_exists:
        return "its VolumeSnapshotContent exists"
    return None


# ---- the executor ----------------------------------------------------------------------------------


Action = Literal["deleted", "would-delete", "skipped", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FixResult:
    finding: Finding
    action: Action
    reason: str = ""
    request_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        f = self.finding
        return {
            "kind": f.kind.value,
            "cloud": f.cloud,
            "cinder_kind": f.cinder_kind,
            "cinder_id": f.cinder_id,
            "action": self.action,
            "reason": self.reason or None,
            "request_id": self.request_id,
        }


def execute(
    planned: Sequence[Planned],
    *,
    clouds: Mapping[str, CinderPort],
    kube: KubeReader,
    fix: FixOptions,
    audit: Options,
    yes: bool,
    max_workers: int = 4,
    request_id: Callable[[], str | None] = lambda: None,
) -> list[FixResult]:
    """Re-check and (with ``yes``) delete each planned object; results in plan order."""
    results: dict[int, FixResult] = {}
    todo = []
    for i, item in enumerate(planned):
        if isinstance(item, Skip):
            results[i] = FixResult(finding=item.finding, action="skipped", reason=item.reason)
        else:
            todo.append((i, item.finding))
    if todo:
        pvs, _ = kube.list("persistentvolumes")
        try:
            contents, _ = kube.list("volumesnapshotcontents")
        except KubeNotFound:
            contents = []
        refs: dict[tuple[str, str], set[str]] = {}
        for pv in pvs:
            vid = pv_volume(pv, audit.provisioner_name)
            if vid:
                key = (pv_cloud(pv, audit.default_cloud), vid)
                refs.setdefault(key, set()).add(str(pv["metadata"]["name"]))
        handles = {h for c in contents if (h := content_handle(c))}
        content_names = {str(c["metadata"]["name"]) for c in contents}

        def one(item: tuple[int, Finding]) -> tuple[int, FixResult]:
            i, f = item
            try:
                return i, _one(f, clouds[f.cloud], kube, fix, yes, refs, handles, content_names, request_id)
            except (CinderError, KubeError) as e:
                log.warning(
                    "audit_fix_failed", cinder_kind=f.cinder_kind, cinder_id=f.cinder_id, error=str(e)
                )
                return i, FixResult(finding=f, action="failed", reason=str(e))

        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            for i, result in pool.map(one, todo):
                results[i] = result
    return [results[i] for i in sorted(results)]


def _one(  # noqa: PLR0917 - one private call site; the arguments are the re-check's inputs
    f: Finding,
    cinder: CinderPort,
    kube: KubeReader,
    fix: FixOptions,
    yes: bool,
    refs: Mapping[tuple[str, str], set[str]],
    handles: set[str],
    content_names: set[str],
    request_id: Callable[[], str | None],
) -> FixResult:
    obj = _read(cinder, f)
    metadata: Mapping[str, str] = obj.metadata if obj is not None else {}
    pv_names = set(refs.get((f.cloud, f.cinder_id), set()))
    claim = None
    if f.cinder_kind == "volume":
        pv_name = metadata.get(names.META_PV_NAME) or f.cinder_name
        live_pv = _get(kube, "persistentvolumes", pv_name) if pv_name else None
        if live_pv is not None and pv_volume(live_pv, "") == f.cinder_id:
            pv_names.add(pv_name)
        ns, name = metadata.get(names.META_PVC_NAMESPACE), metadata.get(names.META_PVC_NAME)
        claim = _get(kube, "persistentvolumeclaims", name, namespace=ns) if ns and name else None
    content = metadata.get(names.META_CONTENT_NAME)
    content_exists = bool(content) and (
        content in content_names or _get(kube, "volumesnapshotcontents", str(content)) is not None
    )
    fresh = Fresh(
        obj=obj,
        pv_names=frozenset(pv_names),
        claim=claim,
        content_exists=content_exists,
        handle_referenced=f.cinder_id in handles,
    )
    reason = recheck(f, fresh, fix)
    if reason is not None:
        return FixResult(finding=f, action="skipped", reason=reason)
    if not yes:
        return FixResult(finding=f, action="would-delete", reason="dry run (add --yes to delete)")
    _delete(cinder, f)
    rid = request_id()
    log.info(
        "audit_fix_deleted",
        cloud=f.cloud,
        cinder_kind=f.cinder_kind,
        cinder_id=f.cinder_id,
        cinder_name=f.cinder_name,
        size_gib=f.size_gib,
        request_id=rid,
    )
    return FixResult(finding=f, action="deleted", request_id=rid)


def _read(cinder: CinderPort, f: Finding) -> Any:
    try:
        if f.cinder_kind == "volume":
            return cinder.get_volume(VolumeId(f.cinder_id))
        if f.cinder_kind == "snapshot":
            return cinder.get_snapshot(SnapshotId(f.cinder_id))
        return cinder.get_backup(BackupId(f.cinder_id))
    except CinderNotFound:
        return None


def _delete(cinder: CinderPort, f: Finding) -> None:
    if f.cinder_kind == "volume":
        cinder.delete_volume(VolumeId(f.cinder_id))
    elif f.cinder_kind == "snapshot":
        cinder.delete_snapshot(SnapshotId(f.cinder_id))
    else:
        cinder.delete_backup(BackupId(f.cinder_id))


def _get(kube: KubeReader, resource: str, name: str, *, namespace: str | None = None) -> Obj | None:
    try:
        return kube.get(resource, name, namespace=namespace)
    except KubeNotFound:
        return None
