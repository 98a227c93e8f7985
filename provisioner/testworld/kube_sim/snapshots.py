"""A minimal external snapshot-controller (+ a pluggable stand-in for the CSI snapshotter sidecar).

Restores read ``VolumeSnapshot → bound VolumeSnapshotContent → status.snapshotHandle``; this reproduces
how those objects come to exist and get their status: dynamic snapshots get a content with the class's
driver and the PV's CSI volumeHandle, pre-provisioned contents carry their handle, and the snapshot's
status follows its content's.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from provisioner.testworld.kube_sim.pvctl import PV, PVC, record_event
from provisioner.testworld.kube_sim.resources import SNAPSHOT_GROUP, by_plural
from provisioner.testworld.kube_sim.status import ApiError
from provisioner.testworld.kube_sim.store import Store
from provisioner.testworld.kube_sim.watchers import DELETED, Change

Obj = dict[str, Any]
#: Given a VolumeSnapshotContent and its source PV (None if unknown), returns the content ``status`` to
#: set, or None to leave the content for someone else (a real CSI snapshotter) to finish.
Snapshotter = Callable[[Obj, Obj | None], Obj | None]

VS = by_plural("volumesnapshots", SNAPSHOT_GROUP)
VSC = by_plural("volumesnapshotcontents", SNAPSHOT_GROUP)
VSCLASS = by_plural("volumesnapshotclasses", SNAPSHOT_GROUP)
ANN_DEFAULT_SNAPSHOT_CLASS = "snapshot.storage.kubernetes.io/is-default-class"

_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QTY = re.compile(r"^(\d+(?:\.\d+)?)([kMGTPE]i?)?$")


def quantity_bytes(value: Any) -> int | None:
    """Bytes in a Kubernetes quantity such as ``10Gi`` (None when unparseable)."""
    if isinstance(value, int):
        return value
    m = _QTY.match(str(value))
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def fake_snapshotter(content: Obj, pv: Obj | None) -> Obj | None:
    """Default snapshotter: every snapshot is cut at once and ready."""
    size = quantity_bytes(((pv or {}).get("spec", {}).get("capacity") or {}).get("storage", 0))
    status: Obj = {
        "snapshotHandle": f"snap-{uuid.uuid4()}",
        "readyToUse": True,
        "creationTime": time.time_ns(),
    }
    if size is not None:
        status["restoreSize"] = size
    return status


class SnapshotController:
    """Binds VolumeSnapshots to contents and mirrors content status onto the snapshot."""

    def __init__(self, store: Store, snapshotter: Snapshotter) -> None:
        self._store = store
        self._snapshotter = snapshotter

    def handle(self, change: Change) -> None:
        """React to one committed change."""
        meta = change.new["metadata"]
        if change.resource == VS.key:
            if change.type == DELETED:
                self._snapshot_deleted(change.new)
            elif not meta.get("deletionTimestamp"):
                self._sync_snapshot(meta["namespace"], meta["name"])
        elif change.resource == VSC.key and change.type != DELETED and not meta.get("deletionTimestamp"):
            self._sync_content(meta["name"])

    def _error(self, vs: Obj, message: str) -> None:
        meta = vs["metadata"]

        def edit(o: Obj) -> Obj | None:
            status = o.setdefault("status", {})
            if (status.get("error") or {}).get("message") == message:
                return None
            status.update(readyToUse=False, error={"message": message, "time": _rfc3339(time.time_ns())})
            return o

        if self._store.mutate(VS, meta["namespace"], meta["name"], edit, subresource="status") is not None:
            record_event(
                self._store,
                vs,
                "VolumeSnapshot",
                "SnapshotCreationFailed",
                message,
                event_type="Warning",
                component="snapshot-controller",
            )

    def _sync_snapshot(self, namespace: str, name: str) -> None:
        vs = self._store.find(VS, namespace, name)
        if vs is None:
            return
        source = (vs.get("spec") or {}).get("source") or {}
        bound = (vs.get("status") or {}).get("boundVolumeSnapshotContentName")
        if source.get("volumeSnapshotContentName"):
            content = self._store.find(VSC, "", source["volumeSnapshotContentName"])
            ref = (content or {}).get("spec", {}).get("volumeSnapshotRef") or {}
            if content is None or ref.get("name") != name or ref.get("namespace") != namespace:
                self._error(vs, "VolumeSnapshotContent is missing or not bound to this VolumeSnapshot")
                return
            self._bind_ref(content, vs)
            self._mirror(vs, content)
            return
        if bound:
            content = self._store.find(VSC, "", bound)
            if content is not None:
                self._mirror(vs, content)
            return
        claim = source.get("persistentVolumeClaimName")
        if not claim:
            return
        class_name = vs["spec"].get("volumeSnapshotClassName") or self._default_class()
        vsclass = self._store.find(VSCLASS, "", class_name) if class_name else None
        if vsclass is None:
            self._error(vs, f"failed to get a VolumeSnapshotClass ({class_name or 'no default class'})")
            return
        pvc = self._store.find(PVC, namespace, claim)
        if pvc is None or (pvc.get("status") or {}).get("phase") != "Bound":
            self._error(vs, f'PersistentVolumeClaim "{claim}" is not bound')
            return
        pv = self._store.find(PV, "", pvc["spec"]["volumeName"])
        handle = ((pv or {}).get("spec", {}).get("csi") or {}).get("volumeHandle")
        if pv is None or not handle:
            self._error(vs, f'the PersistentVolume bound to "{claim}" is not a CSI volume')
            return
        content_name = f"snapcontent-{vs['metadata']['uid']}"
        content = {
            "apiVersion": VSC.api_version,
            "kind": VSC.kind,
            "metadata": {"name": content_name},
            "spec": {
                "volumeSnapshotRef": {
                    "kind": VS.kind,
                    "apiVersion": VS.api_version,
                    "name": name,
                    "namespace": namespace,
                    "uid": vs["metadata"]["uid"],
                },
                "source": {"volumeHandle": handle},
                "driver": vsclass.get("driver", ""),
                "deletionPolicy": vsclass.get("deletionPolicy", "Delete"),
                "volumeSnapshotClassName": class_name,
            },
        }
        try:
            self._store.create(VSC, "", content, manager="snapshot-controller")
        except ApiError as e:
            if e.code != 409:
                raise

        def bind(o: Obj) -> Obj | None:
            o.setdefault("status", {}).update(boundVolumeSnapshotContentName=content_name, readyToUse=False)
            return o

        self._store.mutate(VS, namespace, name, bind, subresource="status")

    def _default_class(self) -> str:
        for c in self._store.objects(VSCLASS):
            if (c["metadata"].get("annotations") or {}).get(ANN_DEFAULT_SNAPSHOT_CLASS) == "true":
                return str(c["metadata"]["name"])
        return ""

    def _bind_ref(self, content: Obj, vs: Obj) -> None:
        uid = vs["metadata"]["uid"]

        def edit(o: Obj) -> Obj | None:
            ref = o["spec"]["volumeSnapshotRef"]
            if ref.get("uid") == uid:
                return None
            ref["uid"] = uid
            return o

        self._store.mutate(VSC, "", content["metadata"]["name"], edit)

    def _sync_content(self, name: str) -> None:
        content = self._store.find(VSC, "", name)
        if content is None:
            return
        if not (content.get("status") or {}).get("snapshotHandle"):
            source = content["spec"].get("source") or {}
            if source.get("snapshotHandle"):
                status: Obj | None = {
                    "snapshotHandle": source["snapshotHandle"],
                    "readyToUse": True,
                    "creationTime": time.time_ns(),
                }
            else:
                status = self._snapshotter(content, self._source_pv(content))
            if status is not None:

                def edit(o: Obj) -> Obj:
                    o["status"] = {**(o.get("status") or {}), **status}
                    return o

                content = self._store.mutate(VSC, "", name, edit, subresource="status") or content
        ref = content["spec"].get("volumeSnapshotRef") or {}
        vs = self._store.find(VS, ref.get("namespace", ""), ref.get("name", ""))
        if vs is not None and ref.get("uid") in (None, "", vs["metadata"]["uid"]):
            self._sync_snapshot(ref["namespace"], ref["name"])

    def _source_pv(self, content: Obj) -> Obj | None:
        ref = content["spec"].get("volumeSnapshotRef") or {}
        vs = self._store.find(VS, ref.get("namespace", ""), ref.get("name", ""))
        claim = ((vs or {}).get("spec", {}).get("source") or {}).get("persistentVolumeClaimName")
        pvc = self._store.find(PVC, ref.get("namespace", ""), claim) if claim else None
        volume = (pvc or {}).get("spec", {}).get("volumeName")
        return self._store.find(PV, "", volume) if volume else None

    def _mirror(self, vs: Obj, content: Obj) -> None:
        cstatus = content.get("status") or {}
        meta = vs["metadata"]

        def edit(o: Obj) -> Obj | None:
            status = dict(o.get("status") or {})
            status["boundVolumeSnapshotContentName"] = content["metadata"]["name"]
            status["readyToUse"] = bool(cstatus.get("readyToUse"))
            if cstatus.get("creationTime"):
                status["creationTime"] = _rfc3339(int(cstatus["creationTime"]))
            if cstatus.get("restoreSize") is not None:
                status["restoreSize"] = _quantity(int(cstatus["restoreSize"]))
            if status.get("readyToUse"):
                status.pop("error", None)
            if status == o.get("status"):
                return None
            o["status"] = status
            return o

        self._store.mutate(VS, meta["namespace"], meta["name"], edit, subresource="status")

    def _snapshot_deleted(self, vs: Obj) -> None:
        name = (vs.get("status") or {}).get("boundVolumeSnapshotContentName")
        content = self._store.find(VSC, "", name) if name else None
        if content is not None and content["spec"].get("deletionPolicy") == "Delete":
            try:
                self._store.delete(VSC, "", name or "", {})
            except ApiError as e:
                if e.code != 404:
                    raise


def _rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))


def _quantity(size: int) -> str:
    for suffix, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)
