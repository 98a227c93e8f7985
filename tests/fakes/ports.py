"""In-memory fakes of the ports the flows use, each with a ``calls`` log (for executor tests).

- ``FakeCinder``: a CinderPort over dicts of volumes / snapshots / attachments, with error injection per
  method (``fail(method, exc, times=None)``) and ``tick()`` to let Cinder make progress (deleting → gone).
- ``FakeKube``: a KubeWriter over an objects dict, with the merge / json / strategic patches the flows use
  and finalizer semantics (delete of an object with finalizers sets ``deletionTimestamp``).
- ``FakeCache``: an informer cache (dict, or a live view of one FakeKube resource).
- ``FakeEvents``: records every ``event()`` call; ``distinct()`` = what the real recorder would show.
- ``FakeClock``: a monotonic + wall clock that only moves when told.
- ``make_context(...)``: a ``provisioner.flows.context.Context`` wired with them.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderAmbiguous,
    CinderBadRequest,
    CinderConflict,
    CinderNotFound,
    KubeAlreadyExists,
    KubeConflict,
    KubeNotFound,
)
from provisioner.domain.model import (
    AVAILABLE,
    DELETING,
    Attachment,
    AttachmentId,
    Backup,
    BackupId,
    BackupRestore,
    CinderCapabilities,
    ConnectionInfo,
    Connector,
    CreateVolumeRequest,
    Snapshot,
    SnapshotId,
    Volume,
    VolumeId,
)
from provisioner.flows.context import Context, Hints, Obj, Settings
from provisioner.telemetry.events import split_request_id
from provisioner.telemetry.metrics import make_metrics

Call = tuple[Any, ...]

CAPS = CinderCapabilities(
    microversion="3.60", attachments=True, name_filter=True, inuse_extend=True, backups_as_source=True
)
LEGACY_CAPS = CinderCapabilities(
    microversion="3.0", attachments=False, name_filter=False, inuse_extend=False, backups_as_source=False
)
CONNECTION = ConnectionInfo(driver_volume_type="rbd", data={"name": "pool/vol", "hosts": ["10.0.0.1"]})


# --- clock ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class FakeClock:
    """``clock()`` (monotonic) and ``wall()``; both move only with ``advance``.

    Starts at the real monotonic reading, because ``Hint.started`` is taken from ``time.monotonic``.
    """

    now: float = field(default_factory=time.monotonic)
    wall_offset: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        """``ports.Clock.monotonic``: the same reading as calling the clock."""
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- Cinder ---------------------------------------------------------------------------------------------


#: What Cinder (29) answers a refused volume delete, whatever the reason (the emulator says the same).
CINDER_DELETE_REFUSED = (
    "Invalid volume: Volume status must be available or error or error_restoring or error_extending or "
    "error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a "
    "transfer, or be disassociated from snapshots after volume transfer."
)


class FakeCinder:
    """A CinderPort in memory. ``calls`` logs every call as ``(method, *args)``."""

    def __init__(self, *, capabilities: CinderCapabilities = CAPS, name: str = "default") -> None:
        self.name = name
        self._caps = capabilities
        self.volumes: dict[str, Volume] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.attachments: dict[str, Attachment] = {}
        self.backups: dict[str, Backup] = {}
        self.backup_service = True  # what has_backup_service answers
        self.restored: dict[str, BackupId] = {}  # volume id → the backup last restored into it
        self.calls: list[Call] = []
        self._errors: dict[str, list[BaseException | None]] = {}
        self._always: dict[str, BaseException] = {}
        self._ids = itertools.count(1)

    # setup ------------------------------------------------------------------------------------------
    def add_volume(self, volume_id: str, *, status: str = AVAILABLE, **fields: Any) -> Volume:
        """Put a volume in place (not logged as a call)."""
        fields.setdefault("name", f"vol-{volume_id}")
        fields.setdefault("size_gib", 1)
        attachment_ids = tuple(AttachmentId(a) for a in fields.pop("attachment_ids", ()))
        volume = Volume(id=VolumeId(volume_id), status=status, attachment_ids=attachment_ids, **fields)
        self.volumes[volume_id] = volume
        for aid in attachment_ids:
            self.attachments.setdefault(
                aid, Attachment(id=aid, volume_id=volume.id, status="attached", connection_info=CONNECTION)
            )
        return volume

    def add_snapshot(self, snapshot_id: str, volume_id: str, *, status: str = AVAILABLE) -> Snapshot:
        snap = Snapshot(
            id=SnapshotId(snapshot_id),
            name=snapshot_id,
            volume_id=VolumeId(volume_id),
            size_gib=1,
            status=status,
        )
        self.snapshots[snapshot_id] = snap
        return snap

    def add_backup(
        self, backup_id: str, volume_id: str, *, status: str = AVAILABLE, size_gib: int = 1, **fields: Any
    ) -> Backup:
        """Put a backup in place (not logged as a call)."""
        fields.setdefault("name", backup_id)
        backup = Backup(
            id=BackupId(backup_id), volume_id=VolumeId(volume_id), status=status, size_gib=size_gib, **fields
        )
        self.backups[backup_id] = backup
        return backup

    def fail(self, method: str, exc: BaseException, *, times: int | None = None) -> None:
        """Make ``method`` raise ``exc``: the next ``times`` calls, or every call when ``times`` is None."""
        if times is None:
            self._always[method] = exc
        else:
            self._errors.setdefault(method, []).extend([exc] * times)

    def heal(self, method: str | None = None) -> None:
        """Stop injecting errors (into ``method``, or everywhere)."""
        for d in (self._errors, self._always):
            if method is None:
                d.clear()
            else:
                d.pop(method, None)

    def tick(self) -> None:
        """Cinder makes progress: deleting volumes go away, creating ones become available."""
        for vid, v in list(self.volumes.items()):
            if v.status == DELETING:
                del self.volumes[vid]
            elif v.status in ("creating", "restoring-backup"):
                self.volumes[vid] = replace(v, status=AVAILABLE)
        for bid, b in list(self.backups.items()):
            if b.status == DELETING:
                del self.backups[bid]
            elif b.status in ("creating", "restoring"):
                self.backups[bid] = replace(b, status=AVAILABLE)

    def methods_called(self) -> list[str]:
        return [c[0] for c in self.calls]

    # plumbing ---------------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        queued = self._errors.get(method)
        if queued:
            exc = queued.pop(0)
            if exc is not None:
                raise exc
        if method in self._always:
            raise self._always[method]

    def _volume(self, volume_id: str, operation: str) -> Volume:
        try:
            return self.volumes[volume_id]
        except KeyError:
            raise CinderNotFound(
                f"volume {volume_id} not found", operation=operation, status_code=404
            ) from None

    def _set(self, volume: Volume, **changes: Any) -> None:
        self.volumes[volume.id] = replace(volume, **changes)

    # reads ------------------------------------------------------------------------------------------
    @property
    def capabilities(self) -> CinderCapabilities:
        return self._caps

    def get_volume(self, volume_id: VolumeId) -> Volume:
        self._call("get_volume", volume_id)
        return self._volume(volume_id, "volume_get")

    def find_volume(self, *, name: str, cluster: str) -> Volume | None:
        self._call("find_volume", name, cluster)
        found = [
            v
            for v in self.volumes.values()
            if v.name == name and v.metadata.get(names.META_CLUSTER) == cluster
        ]
        if len(found) > 1:
            raise CinderAmbiguous(f"{len(found)} volumes named {name}", operation="volume_find")
        return found[0] if found else None

    def list_volumes(
        self, *, metadata: Mapping[str, str], created_since: float | None = None
    ) -> Iterator[Volume]:
        self._call("list_volumes", dict(metadata), *(() if created_since is None else (created_since,)))
        items = [v for v in self.volumes.values() if all(v.metadata.get(k) == x for k, x in metadata.items())]
        if created_since is not None:
            items = [v for v in items if v.created_at is None or v.created_at >= int(created_since)]
        return iter(sorted(items, key=lambda v: v.id))

    def get_snapshot(self, snapshot_id: SnapshotId) -> Snapshot:
        self._call("get_snapshot", snapshot_id)
        try:
            return self.snapshots[snapshot_id]
        except KeyError:
            raise CinderNotFound(f"snapshot {snapshot_id} not found", status_code=404) from None

    def list_snapshots(
        self, *, metadata: Mapping[str, str] | None = None, volume_id: VolumeId | None = None
    ) -> Iterator[Snapshot]:
        self._call("list_snapshots", dict(metadata or {}), volume_id)
        return iter(
            s
            for s in list(self.snapshots.values())
            if (volume_id is None or s.volume_id == volume_id)
            and all(s.metadata.get(k) == x for k, x in (metadata or {}).items())
        )

    # mutations --------------------------------------------------------------------------------------
    def create_volume(
        self, request: CreateVolumeRequest, *, before_send: Callable[[], None] | None = None
    ) -> Volume:
        if before_send is not None:  # like the adapter: once the slot is held, before anything is sent
            before_send()
        self._call("create_volume", request.name)
        vid = f"{self.name}-vol-{next(self._ids)}"
        if request.backup_id is not None:
            self._backup(request.backup_id, "create_volume")
            self.restored[vid] = request.backup_id
        return self.add_volume(
            vid,
            status="creating",
            name=request.name,
            size_gib=request.size_gib,
            metadata=dict(request.metadata),
        )

    def delete_volume(self, volume_id: VolumeId, *, cascade: bool = False) -> None:
        self._call("delete_volume", volume_id, cascade)
        volume = self.volumes.get(volume_id)
        if volume is None:
            return  # 404 counts as success
        snaps = [s for s in self.snapshots.values() if s.volume_id == volume_id]
        if (snaps and not cascade) or volume.attachment_ids:
            # Cinder's one answer for every reason a delete is refused (snapshots, attached, status...)
            raise CinderConflict(CINDER_DELETE_REFUSED, operation="delete_volume", status_code=400)
        for s in snaps:
            del self.snapshots[s.id]
        self._set(volume, status=DELETING)

    def extend_volume(self, volume_id: VolumeId, new_size_gib: int) -> None:
        self._call("extend_volume", volume_id, new_size_gib)
        self._set(self._volume(volume_id, "volume_extend"), size_gib=new_size_gib)

    def set_volume_metadata(self, volume_id: VolumeId, metadata: Mapping[str, str]) -> None:
        self._call("set_volume_metadata", volume_id, dict(metadata))
        volume = self._volume(volume_id, "volume_metadata_set")
        self._set(volume, metadata={**volume.metadata, **metadata})

    def create_attachment(self, volume_id: VolumeId, connector: Connector) -> Attachment:
        self._call("create_attachment", volume_id)
        volume = self._volume(volume_id, "attachment_create")
        aid = AttachmentId(f"att-{next(self._ids)}")
        attachment = Attachment(id=aid, volume_id=volume_id, status="reserved", connection_info=CONNECTION)
        self.attachments[aid] = attachment
        self._set(volume, status="reserved", attachment_ids=(*volume.attachment_ids, aid))
        return attachment

    def complete_attachment(self, attachment_id: AttachmentId) -> None:
        self._call("complete_attachment", attachment_id)
        attachment = self.attachments.get(attachment_id)
        if attachment is None:
            raise CinderNotFound(f"attachment {attachment_id} not found", status_code=404)
        self.attachments[attachment_id] = replace(attachment, status="attached")
        self._set(self._volume(attachment.volume_id, "attachment_complete"), status="in-use")

    def delete_attachment(self, attachment_id: AttachmentId) -> None:
        self._call("delete_attachment", attachment_id)
        attachment = self.attachments.pop(attachment_id, None)
        if attachment is None:
            return  # 404 counts as success
        volume = self.volumes.get(attachment.volume_id)
        if volume is not None:
            left = tuple(a for a in volume.attachment_ids if a != attachment_id)
            self._set(volume, attachment_ids=left, status=volume.status if left else AVAILABLE)

    def reserve(self, volume_id: VolumeId) -> None:
        self._call("reserve", volume_id)
        self._set(self._volume(volume_id, "volume_reserve"), status="reserved")

    def initialize_connection(self, volume_id: VolumeId, connector: Connector) -> ConnectionInfo:
        self._call("initialize_connection", volume_id)
        self._set(self._volume(volume_id, "initialize_connection"), status="in-use")
        return CONNECTION

    def terminate_connection(self, volume_id: VolumeId, connector: Connector) -> None:
        self._call("terminate_connection", volume_id)
        self._set(self._volume(volume_id, "terminate_connection"), status="reserved")

    def unreserve(self, volume_id: VolumeId) -> None:
        self._call("unreserve", volume_id)
        self._set(self._volume(volume_id, "volume_unreserve"), status=AVAILABLE)

    def create_snapshot(
        self, volume_id: VolumeId, *, name: str, metadata: Mapping[str, str], force: bool = False
    ) -> Snapshot:
        self._call("create_snapshot", volume_id, name)
        self._volume(volume_id, "snapshot_create")
        snap = self.add_snapshot(f"snap-{next(self._ids)}", volume_id)
        snap = replace(snap, name=name, metadata=dict(metadata))
        self.snapshots[snap.id] = snap
        return snap

    def delete_snapshot(self, snapshot_id: SnapshotId) -> None:
        self._call("delete_snapshot", snapshot_id)
        self.snapshots.pop(snapshot_id, None)

    # backups (like real Cinder: incremental needs an earlier available backup; dependants block delete)
    def has_backup_service(self) -> bool:
        self._call("has_backup_service")
        return self.backup_service

    def _backup(self, backup_id: str, operation: str) -> Backup:
        try:
            return self.backups[backup_id]
        except KeyError:
            raise CinderNotFound(
                f"Backup {backup_id} could not be found.", operation=operation, status_code=404
            ) from None

    def create_backup(
        self,
        volume_id: VolumeId,
        *,
        name: str,
        metadata: Mapping[str, str],
        incremental: bool = False,
        force: bool = False,
    ) -> Backup:
        self._call("create_backup", volume_id, name, incremental, force)
        volume = self._volume(volume_id, "create_backup")
        if volume.status == "in-use" and not force:
            raise CinderConflict(
                f"Invalid volume: Volume {volume_id} status must be available, but is in-use.",
                operation="create_backup",
                status_code=400,
            )
        parents = [b for b in self.backups.values() if b.volume_id == volume_id and b.status == AVAILABLE]
        if incremental and not parents:
            raise CinderBadRequest(
                "Invalid backup: No backups available to do an incremental backup.",
                operation="create_backup",
                status_code=400,
            )
        if incremental:
            self.backups[parents[-1].id] = replace(parents[-1], has_dependent_backups=True)
        return self.add_backup(
            f"{self.name}-backup-{next(self._ids)}",
            volume_id,
            status="creating",
            size_gib=volume.size_gib,
            name=name,
            metadata=dict(metadata),
            is_incremental=incremental,
        )

    def get_backup(self, backup_id: BackupId) -> Backup:
        self._call("get_backup", backup_id)
        return self._backup(backup_id, "get_backup")

    def list_backups(
        self, *, metadata: Mapping[str, str] | None = None, volume_id: VolumeId | None = None
    ) -> Iterator[Backup]:
        self._call("list_backups", dict(metadata or {}), volume_id)
        return iter(
            b
            for b in list(self.backups.values())
            if (volume_id is None or b.volume_id == volume_id)
            and all(b.metadata.get(k) == x for k, x in (metadata or {}).items())
        )

    def delete_backup(self, backup_id: BackupId) -> None:
        self._call("delete_backup", backup_id)
        backup = self.backups.get(backup_id)
        if backup is None:
            return  # 404 counts as success
        if backup.has_dependent_backups:
            raise CinderConflict(
                "Invalid backup: Incremental backups exist for this backup.",
                operation="delete_backup",
                status_code=400,
            )
        self.backups[backup_id] = replace(backup, status=DELETING)

    def restore_backup(
        self, backup_id: BackupId, *, volume_id: VolumeId | None = None, name: str | None = None
    ) -> BackupRestore:
        self._call("restore_backup", backup_id, volume_id, name)
        backup = self._backup(backup_id, "restore_backup")
        if backup.status != AVAILABLE:
            raise CinderConflict(
                f"Invalid backup: Backup status must be available, not {backup.status}.",
                operation="restore_backup",
                status_code=400,
            )
        if volume_id is None:
            target = self.add_volume(
                f"{self.name}-vol-{next(self._ids)}",
                status="restoring-backup",
                name=name or f"restore_backup_{backup_id}",
                size_gib=backup.size_gib,
            )
        else:
            target = self._volume(volume_id, "restore_backup")
            if target.status != AVAILABLE or target.size_gib < backup.size_gib:
                raise CinderConflict(
                    f"Invalid volume: Volume to be restored to must be available, not {target.status}.",
                    operation="restore_backup",
                    status_code=400,
                )
            self._set(target, status="restoring-backup")
        self.restored[target.id] = backup.id
        return BackupRestore(backup_id=backup.id, volume_id=target.id, volume_name=target.name)


# --- Kubernetes -----------------------------------------------------------------------------------------

Key = tuple[str, str | None, str]


def _merge(target: dict[str, Any], patch: Mapping[str, Any], *, strategic: bool) -> None:
    for k, v in patch.items():
        if strategic and k.startswith("$deleteFromPrimitiveList/"):
            key = k.split("/", 1)[1]
            remaining = [x for x in (target.get(key) or []) if x not in v]
            if remaining:
                target[key] = remaining
            else:
                target.pop(key, None)
        elif v is None:
            target.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(target.get(k), dict):
            _merge(target[k], v, strategic=strategic)
        elif isinstance(v, Mapping):
            target[k] = {}
            _merge(target[k], v, strategic=strategic)
        else:
            target[k] = copy.deepcopy(v)


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _json_patch(obj: dict[str, Any], ops: list[Mapping[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = obj
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if op["op"] == "test":
            current = node[int(last)] if isinstance(node, list) else node.get(last)
            if current != op["value"]:
                raise KubeConflict(f"test failed at {op['path']}", status_code=422)
        elif op["op"] in ("add", "replace"):
            if isinstance(node, list):
                node.append(op["value"]) if last == "-" else node.insert(int(last), op["value"])
            else:
                node[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:  # pragma: no cover - only what the flows use
            raise NotImplementedError(op["op"])


class FakeKube:
    """A KubeWriter over ``objects[(resource, namespace, name)]``; ``calls`` logs every call."""

    def __init__(self) -> None:
        self.objects: dict[Key, Obj] = {}
        self.calls: list[Call] = []
        self._errors: dict[str, list[BaseException]] = {}
        self._rv = itertools.count(1)

    def put(self, resource: str, obj: Obj) -> Obj:
        """Store ``obj`` as the API would have it (not logged as a call)."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("resourceVersion", str(next(self._rv)))
        self.objects[(resource, meta.get("namespace"), meta["name"])] = obj
        return obj

    def fail(self, method: str, exc: BaseException, *, times: int = 1) -> None:
        self._errors.setdefault(method, []).extend([exc] * times)

    def find(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.objects.get((resource, namespace, name))

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        queued = self._errors.get(method)
        if queued:
            raise queued.pop(0)

    def _live(self, resource: str, name: str, namespace: str | None) -> Obj:
        obj = self.objects.get((resource, namespace, name))
        if obj is None:
            raise KubeNotFound(f"{resource} {namespace}/{name} not found", status_code=404)
        return obj

    def _settle(self, resource: str, obj: Obj) -> None:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(next(self._rv))
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects.pop((resource, meta.get("namespace"), meta["name"]), None)

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> Obj:
        self._call("get", resource, name, namespace)
        return copy.deepcopy(self._live(resource, name, namespace))

    def create(self, resource: str, obj: Mapping[str, Any], *, namespace: str | None = None) -> Obj:
        name = obj.get("metadata", {}).get("name")
        self._call("create", resource, name, namespace)
        if name and self.find(resource, name, namespace) is not None:
            # what the API server answers (409 AlreadyExists), never a silent overwrite
            raise KubeAlreadyExists(f'{resource} "{name}" already exists')
        stored = copy.deepcopy(dict(obj))
        if namespace is not None:
            stored.setdefault("metadata", {})["namespace"] = namespace
        return copy.deepcopy(self.put(resource, stored))

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: Any = "merge",
        subresource: str | None = None,
    ) -> Obj:
        self._call("patch", resource, name, namespace, patch_type, copy.deepcopy(patch))
        live = self._live(resource, name, namespace)
        work = copy.deepcopy(live)
        if patch_type == "json":
            _json_patch(work, patch)
        else:
            _merge(work, patch, strategic=patch_type == "strategic")
        live.clear()
        live.update(work)
        self._settle(resource, live)
        return copy.deepcopy(live)

    def delete(
        self,
        resource: str,
        name: str,
        *,
        namespace: str | None = None,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> None:
        self._call("delete", resource, name, namespace)
        live = self._live(resource, name, namespace)
        if uid is not None and live["metadata"].get("uid") != uid:
            raise KubeConflict(f"uid precondition failed for {name}", status_code=409)
        live["metadata"].setdefault("deletionTimestamp", "2026-01-01T00:00:00Z")
        self._settle(resource, live)


# --- caches and events ----------------------------------------------------------------------------------


class FakeCache:
    """An informer cache: a plain dict, or (``view``) the live objects of one FakeKube resource."""

    def __init__(self, objects: Mapping[str, Obj] | None = None) -> None:
        self.objects: dict[str, Obj] = dict(objects or {})
        self._source: Callable[[], dict[str, Obj]] | None = None

    @classmethod
    def view(cls, kube: FakeKube, resource: str) -> FakeCache:
        """Always shows what ``kube`` holds for ``resource`` (keys ``name`` or ``namespace/name``)."""
        cache = cls()

        def source() -> dict[str, Obj]:
            out = {}
            for (res, ns, name), obj in kube.objects.items():
                if res == resource:
                    out[f"{ns}/{name}" if ns else name] = copy.deepcopy(obj)
            return out

        cache._source = source
        return cache

    def put(self, key: str, obj: Obj) -> None:
        self.objects[key] = obj

    def get(self, key: str) -> Obj | None:
        if self._source is not None:
            return self._source().get(key)
        return self.objects.get(key)

    def values(self) -> list[Obj]:
        if self._source is not None:
            return list(self._source().values())
        return list(self.objects.values())


@dataclass(frozen=True, slots=True)
class EventCall:
    object: str
    type: str
    reason: str
    message: str


@dataclass(slots=True)
class FakeEvents:
    """Records every ``event()`` call; ``distinct()`` dedups like EventRecorder (request id stripped)."""

    calls: list[EventCall] = field(default_factory=list)

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        self.calls.append(EventCall(name, type_, reason, message))

    def distinct(self, type_: str | None = None) -> list[EventCall]:
        """The Events a user would see (one per object, type, reason and message without request id)."""
        seen: dict[tuple[str, str, str, str], EventCall] = {}
        for c in self.calls:
            if type_ is None or c.type == type_:
                message, _ = split_request_id(c.message)
                seen.setdefault((c.object, c.type, c.reason, message), replace(c, message=message))
        return list(seen.values())

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


# --- context --------------------------------------------------------------------------------------------

CONNECTOR = Connector(host="provisioner", ip="10.0.0.9", initiator="iqn.2026-01.io.netvol:cluster")


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "provisioner_name": names.DEFAULT_PROVISIONER_NAME,
        "cluster_id": "cluster-a",
        "secret_namespace": "netvol-system",
        "connector": CONNECTOR,
        "default_cloud": "default",
        "identity": "replica-0",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass(slots=True)
class World:
    """Everything ``make_context`` wired, for assertions."""

    ctx: Context
    cinder: FakeCinder
    clouds: dict[str, FakeCinder]
    kube: FakeKube
    pvcs: FakeCache
    pvs: FakeCache
    classes: FakeCache
    events: FakeEvents
    clock: FakeClock
    leader: list[bool]


def make_context(
    *,
    clouds: Mapping[str, FakeCinder] | None = None,
    kube: FakeKube | None = None,
    pvcs: FakeCache | None = None,
    pvs: FakeCache | None = None,
    classes: FakeCache | None = None,
    events: FakeEvents | None = None,
    clock: FakeClock | None = None,
    is_leader: Callable[[], bool] | None = None,
    live_caches: bool = True,
    **settings: Any,
) -> World:
    """A Context over fakes. With ``live_caches`` the caches are live views of ``kube`` (no lag)."""
    kube = kube or FakeKube()
    all_clouds = dict(clouds) if clouds is not None else {"default": FakeCinder(name="default")}
    clock = clock or FakeClock()
    events = events or FakeEvents()
    leader = [True]
    if live_caches:
        pvcs = pvcs or FakeCache.view(kube, "persistentvolumeclaims")
        pvs = pvs or FakeCache.view(kube, "persistentvolumes")
        classes = classes or FakeCache.view(kube, "storageclasses")
    settings_obj = make_settings(**settings)
    ctx = Context(
        settings=settings_obj,
        kube=kube,
        clouds=all_clouds,
        pvcs=pvcs or FakeCache(),
        pvs=pvs or FakeCache(),
        classes=classes or FakeCache(),
        events=events,  # type: ignore[arg-type]
        metrics=make_metrics(),
        hints=Hints(clock=clock),
        is_leader=is_leader or (lambda: leader[0]),
        clock=clock,
        wall=clock.wall,
    )
    return World(
        ctx=ctx,
        cinder=all_clouds.get(settings_obj.default_cloud) or next(iter(all_clouds.values())),
        clouds=all_clouds,
        kube=kube,
        pvcs=ctx.pvcs,  # type: ignore[arg-type]
        pvs=ctx.pvs,  # type: ignore[arg-type]
        classes=ctx.classes,  # type: ignore[arg-type]
        events=events,
        clock=clock,
        leader=leader,
    )
