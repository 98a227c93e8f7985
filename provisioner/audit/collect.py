"""Gathering what the audit compares: lists through the ports, never one call per object a list answers.

Order (see ``decide``): Kubernetes (PVs, PVCs, VolumeSnapshotContents), then every cloud's volumes,
snapshots and backups (in parallel, each a paginated list filtered server-side by our cluster tag unless
``--all-clusters`` / ``--untagged`` need them all), then Kubernetes again. Only what no list can answer is
fetched one by one: a volume a PV references that the tag-filtered list did not return (another
cluster's, or untagged), a snapshot / backup a VolumeSnapshotContent names — few, and bounded by
``max_workers``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from provisioner.audit.decide import (
    CloudInventory,
    KubeInventory,
    Observed,
    Options,
    content_handle,
    is_our_content,
    pv_cloud,
    pv_deleting,
    pv_volume,
)
from provisioner.domain import names
from provisioner.domain.errors import CinderError, CinderNotFound, KubeNotFound
from provisioner.domain.model import BackupId, SnapshotId, VolumeId
from provisioner.ports import CinderPort

log = structlog.get_logger(__name__)
Obj = dict[str, Any]
#: progress(stage, objects read so far in that stage)
Progress = Callable[[str, int], None]


class KubeLister(Protocol):
    """Paginated lists of one resource (``provisioner.adapters.kube.KubeAdapter.list``)."""

    def list(self, resource: str) -> tuple[list[Obj], str]: ...


class AuditError(Exception):
    """The audit could not read what it must compare (Kubernetes unreachable, no cloud configured)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _CloudResult:
    inventory: CloudInventory
    errors: tuple[str, ...]


def _kube(kube: KubeLister, progress: Progress) -> KubeInventory:
    def listed(resource: str, *, optional: bool = False) -> list[Obj]:
        try:
            items, _rv = kube.list(resource)
        except KubeNotFound:
            if optional:  # the snapshot CRDs are not installed: no contents
                return []
            raise
        progress(resource, len(items))
        return items

    return KubeInventory(
        pvs=listed("persistentvolumes"),
        pvcs=listed("persistentvolumeclaims"),
        snapshot_contents=listed("volumesnapshotcontents", optional=True),
    )


def _counted(items: Iterable[Any], stage: str, progress: Progress) -> list[Any]:
    out: list[Any] = []
    for item in items:
        out.append(item)
        if len(out) % 500 == 0:
            progress(stage, len(out))
    progress(stage, len(out))
    return out


def _cloud(name: str, cinder: CinderPort, o: Options, progress: Progress) -> _CloudResult:
    wide = o.all_clusters or o.untagged
    tag = {} if wide else {names.META_CLUSTER: o.cluster_id}
    errors: list[str] = []
    volumes: list[Any] = []
    snapshots: list[Any] = []
    backups: list[Any] = []
    complete = snaps_ok = backups_ok = True
    try:
        volumes = _counted(cinder.list_volumes(metadata=tag), f"{name}: volumes", progress)
    except CinderError as e:
        complete = False
        errors.append(f"cloud {name}: cannot list volumes: {e}")
    try:
        snapshots = _counted(cinder.list_snapshots(metadata=tag or None), f"{name}: snapshots", progress)
    except CinderError as e:
        snaps_ok = False
        errors.append(f"cloud {name}: cannot list snapshots: {e}")
    try:
        if cinder.has_backup_service():
            backups = _counted(cinder.list_backups(metadata=tag or None), f"{name}: backups", progress)
    except CinderNotFound:
        backups = []  # no /backups on this cloud (no cinder-backup API): it holds no backups
    except CinderError as e:
        backups_ok = False
        errors.append(f"cloud {name}: cannot list backups: {e}")
    inv = CloudInventory(
        cloud=name,
        volumes=volumes,
        snapshots=snapshots,
        backups=backups,
        complete=complete,
        snapshots_complete=snaps_ok,
        backups_complete=backups_ok,
    )
    return _CloudResult(inventory=inv, errors=tuple(errors))


def collect(
    *,
    clouds: Mapping[str, CinderPort],
    kube: KubeLister,
    options: Options,
    progress: Progress | None = None,
    max_workers: int = 8,
) -> Observed:
    """Read both sides (Kubernetes twice, around Cinder) for ``decide.audit``."""
    if not clouds:
        raise AuditError("no cloud to audit")
    report: Progress = progress or (lambda stage, n: None)
    earlier = _kube(kube, report)
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(clouds)))) as pool:
        results = list(pool.map(lambda item: _cloud(item[0], item[1], options, report), clouds.items()))
    later = _kube(kube, report)
    inventories = [r.inventory for r in results]
    errors = [e for r in results for e in r.errors]
    inventories = _fill_in(inventories, clouds, later, options, max_workers, errors)
    return Observed(
        clouds=inventories,
        kube=replace(later, earlier=earlier),
        errors=tuple(errors),
    )


def _fill_in(  # noqa: PLR0917 - one private call site
    inventories: list[CloudInventory],
    clouds: Mapping[str, CinderPort],
    kube: KubeInventory,
    o: Options,
    max_workers: int,
    errors: list[str],
) -> list[CloudInventory]:
    """Fetch, one by one, the referenced objects the filtered lists could not return."""
    listed = {inv.cloud: {v.id for v in inv.volumes} for inv in inventories}
    wanted: list[tuple[str, str]] = []
    for pv in kube.pvs:
        vid = pv_volume(pv, o.provisioner_name)
        cloud = pv_cloud(pv, o.default_cloud)
        if vid and not pv_deleting(pv) and cloud in listed and vid not in listed[cloud]:
            wanted.append((cloud, vid))
    known = {s.id for inv in inventories for s in inv.snapshots} | {
        str(b.id) for inv in inventories for b in inv.backups
    }
    handles = sorted(
        {
            h
            for vsc in kube.snapshot_contents
            if is_our_content(vsc, o.provisioner_name)
            and (h := content_handle(vsc)) is not None
            and h not in known
            and names.is_cinder_id(h)
        }
    )

    def get_volume(item: tuple[str, str]) -> tuple[str, Any]:
        cloud, vid = item
        if not names.is_cinder_id(vid):
            return cloud, None
        try:
            return cloud, clouds[cloud].get_volume(VolumeId(vid))
        except CinderNotFound:
            return cloud, None
        except CinderError as e:
            errors.append(f"cloud {cloud}: cannot read volume {vid}: {e}")
            return cloud, _Unknown(vid)

    def get_handle(handle: str) -> list[tuple[str, str, Any]]:
        found: list[tuple[str, str, Any]] = []
        for cloud, cinder in clouds.items():
            try:
                found.append((cloud, "snapshot", cinder.get_snapshot(SnapshotId(handle))))
                continue
            except CinderNotFound:
                pass
            except CinderError as e:
                errors.append(f"cloud {cloud}: cannot read snapshot {handle}: {e}")
                found.append((cloud, "unknown", None))
                continue
            try:
                found.append((cloud, "backup", cinder.get_backup(BackupId(handle))))
            except CinderNotFound:
                pass
            except CinderError as e:
                errors.append(f"cloud {cloud}: cannot read backup {handle}: {e}")
                found.append((cloud, "unknown", None))
        return found

    if not wanted and not handles:
        return inventories
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        got_volumes = list(pool.map(get_volume, wanted))
        got_handles = [x for xs in pool.map(get_handle, handles) for x in xs]
    out = []
    for inv in inventories:
        extra_v = [
            v for c, v in got_volumes if c == inv.cloud and v is not None and not isinstance(v, _Unknown)
        ]
        unknown = any(c == inv.cloud and isinstance(v, _Unknown) for c, v in got_volumes)
        extra_s = [x for c, k, x in got_handles if c == inv.cloud and k == "snapshot"]
        extra_b = [x for c, k, x in got_handles if c == inv.cloud and k == "backup"]
        unknown_h = any(c == inv.cloud and k == "unknown" for c, k, _ in got_handles)
        out.append(
            replace(
                inv,
                volumes=[*inv.volumes, *extra_v],
                snapshots=[*inv.snapshots, *extra_s],
                backups=[*inv.backups, *extra_b],
                complete=inv.complete and not unknown,
                snapshots_complete=inv.snapshots_complete and not unknown_h,
            )
        )
    if wanted or handles:
        log.info("audit_fetched_referenced", volumes=len(wanted), snapshot_handles=len(handles))
    return out


@dataclass(frozen=True, slots=True)
class _Unknown:
    """A referenced object that could not be read (an error, not an absence)."""

    id: str
