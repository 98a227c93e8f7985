"""The common snapshot-controller (external-snapshotter's ``snapshot-controller``), as the simulator runs it.

It owns no driver, so it never cuts a snapshot nor invents a handle: the CSI snapshotter of the content's
``spec.driver`` (for ``cinder.netvol.io`` our controller, ``provisioner.flows.snapshots``) sets the
content's ``status``. What it does, like the real one:

- dynamic VolumeSnapshot (``spec.source.persistentVolumeClaimName``): finalizers on the snapshot
  (``…/volumesnapshot-as-source-protection``, ``…/volumesnapshot-bound-protection``) and on the source
  claim while the snapshot is being cut (``…/pvc-as-source-protection``); class = the named one or the
  default class of the PV's CSI driver; a VolumeSnapshotContent ``snapcontent-<snapshot uid>`` with the
  class's ``driver`` / ``deletionPolicy``, the PV's CSI ``volumeHandle`` and the bound-protection finalizer
  (``…/volumesnapshotcontent-bound-protection``); ``status.boundVolumeSnapshotContentName``.
- pre-provisioned VolumeSnapshot (``spec.source.volumeSnapshotContentName``): binds when the content's
  ``volumeSnapshotRef`` names it (sets the ref's uid).
- status: the snapshot mirrors its content's ``readyToUse``, ``creationTime`` (ns → RFC 3339),
  ``restoreSize`` (bytes → quantity) and ``error``.
- deletion: a snapshot with a ``deletionTimestamp`` waits while a Pending claim restores from it, then for
  a ``Delete`` content annotates it ``…/volumesnapshot-being-deleted: yes`` (the sidecar deletes only
  then) and deletes it; the snapshot's finalizers go once the content is gone (``Delete``) or at once
  (``Retain``). A ``Delete`` content whose snapshot is gone is deleted the same way; a content being
  deleted loses the bound-protection finalizer once no live snapshot uses it.
"""

from __future__ import annotations

import re
import time
from typing import Any

from provisioner.testworld.kube_sim.pvctl import PV, PVC, record_event
from provisioner.testworld.kube_sim.resources import SNAPSHOT_GROUP, by_plural
from provisioner.testworld.kube_sim.status import ApiError
from provisioner.testworld.kube_sim.store import Store
from provisioner.testworld.kube_sim.watchers import DELETED, Change

Obj = dict[str, Any]

VS = by_plural("volumesnapshots", SNAPSHOT_GROUP)
VSC = by_plural("volumesnapshotcontents", SNAPSHOT_GROUP)
VSCLASS = by_plural("volumesnapshotclasses", SNAPSHOT_GROUP)
ANN_DEFAULT_SNAPSHOT_CLASS = "snapshot.storage.kubernetes.io/is-default-class"
ANN_BEING_DELETED = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted"
VS_SOURCE_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"
VS_BOUND_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"
CONTENT_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
PVC_SOURCE_FINALIZER = "snapshot.storage.kubernetes.io/pvc-as-source-protection"
COMPONENT = "snapshot-controller"

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


class SnapshotController:
    """Binds VolumeSnapshots to contents, mirrors content status, runs the deletion protocol."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def handle(self, change: Change) -> None:
        """React to one committed change."""
        meta = change.new["metadata"]
        if change.resource == VS.key:
            if change.type == DELETED:
                self._snapshot_gone(change.new)
            else:
                self._sync_snapshot(meta["namespace"], meta["name"])
        elif change.resource == VSC.key and change.type != DELETED:
            self._sync_content(meta["name"])
        elif change.resource == VSC.key:
            ref = change.new["spec"].get("volumeSnapshotRef") or {}
            if ref.get("name"):
                self._sync_snapshot(ref.get("namespace", ""), ref["name"])
        elif change.resource == PVC.key and change.type != DELETED:
            self._sync_snapshots_restoring_into(change.new)

    # ---- snapshots -----------------------------------------------------------------------------------

    def _sync_snapshot(self, namespace: str, name: str) -> None:
        vs = self._store.find(VS, namespace, name)
        if vs is None:
            return
        if vs["metadata"].get("deletionTimestamp"):
            self._delete_snapshot(vs)
            return
        source = (vs.get("spec") or {}).get("source") or {}
        bound = (vs.get("status") or {}).get("boundVolumeSnapshotContentName")
        if source.get("volumeSnapshotContentName"):
            self._sync_pre_provisioned(vs, source["volumeSnapshotContentName"])
            return
        if bound:
            content = self._store.find(VSC, "", bound)
            if content is not None:
                self._mirror(vs, content)
                self._protect_claim(vs, content)
            return
        if source.get("persistentVolumeClaimName"):
            self._create_content(vs, source["persistentVolumeClaimName"])

    def _sync_pre_provisioned(self, vs: Obj, content_name: str) -> None:
        meta = vs["metadata"]
        content = self._store.find(VSC, "", content_name)
        ref = (content or {}).get("spec", {}).get("volumeSnapshotRef") or {}
        if content is None or ref.get("name") != meta["name"] or ref.get("namespace") != meta["namespace"]:
            self._error(vs, "VolumeSnapshotContent is missing or not bound to this VolumeSnapshot")
            return
        if ref.get("uid") not in (None, "", meta["uid"]):
            self._error(vs, "VolumeSnapshotContent is bound to another VolumeSnapshot with this name")
            return
        self._add_finalizers(VS, meta["namespace"], meta["name"], (VS_SOURCE_FINALIZER, VS_BOUND_FINALIZER))
        self._bind_ref(content, vs)
        self._add_finalizers(VSC, "", content_name, (CONTENT_FINALIZER,))
        self._mirror(vs, self._store.find(VSC, "", content_name) or content)

    def _create_content(self, vs: Obj, claim: str) -> None:
        meta = vs["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        pvc = self._store.find(PVC, namespace, claim)
        if pvc is None or (pvc.get("status") or {}).get("phase") != "Bound":
            self._error(vs, f'PersistentVolumeClaim "{claim}" is not bound')
            return
        pv = self._store.find(PV, "", pvc["spec"]["volumeName"])
        csi = (pv or {}).get("spec", {}).get("csi") or {}
        if pv is None or not csi.get("volumeHandle"):
            self._error(vs, f'the PersistentVolume bound to "{claim}" is not a CSI volume')
            return
        class_name = vs["spec"].get("volumeSnapshotClassName") or self._default_class(csi.get("driver", ""))
        vsclass = self._store.find(VSCLASS, "", class_name) if class_name else None
        if vsclass is None:
            self._error(vs, f"failed to get a VolumeSnapshotClass ({class_name or 'no default class'})")
            return
        if vsclass.get("driver") != csi.get("driver"):
            self._error(
                vs,
                f"VolumeSnapshotClass {class_name} is for driver {vsclass.get('driver')}, "
                f"the volume's is {csi.get('driver')}",
            )
            return
        self._add_finalizers(VS, namespace, name, (VS_SOURCE_FINALIZER, VS_BOUND_FINALIZER))
        self._add_finalizers(PVC, namespace, claim, (PVC_SOURCE_FINALIZER,))
        content_name = f"snapcontent-{meta['uid']}"
        content = {
            "apiVersion": VSC.api_version,
            "kind": VSC.kind,
            "metadata": {"name": content_name, "finalizers": [CONTENT_FINALIZER]},
            "spec": {
                "volumeSnapshotRef": {
                    "kind": VS.kind,
                    "apiVersion": VS.api_version,
                    "name": name,
                    "namespace": namespace,
                    "uid": meta["uid"],
                },
                "source": {"volumeHandle": csi["volumeHandle"]},
                "driver": vsclass.get("driver", ""),
                "deletionPolicy": vsclass.get("deletionPolicy", "Delete"),
                "volumeSnapshotClassName": class_name,
            },
        }
        try:
            self._store.create(VSC, "", content, manager=COMPONENT)
        except ApiError as e:
            if e.code != 409:
                raise

        def bind(o: Obj) -> Obj | None:
            status = o.setdefault("status", {})
            if status.get("boundVolumeSnapshotContentName") == content_name:
                return None
            status.update(boundVolumeSnapshotContentName=content_name, readyToUse=False)
            return o

        self._store.mutate(VS, namespace, name, bind, subresource="status")
        record_event(
            self._store,
            vs,
            "VolumeSnapshot",
            "CreatingSnapshot",
            f"Waiting for a snapshot {namespace}/{name} to be created by the CSI driver.",
            component=COMPONENT,
        )

    def _default_class(self, driver: str) -> str:
        for c in self._store.objects(VSCLASS):
            if (c["metadata"].get("annotations") or {}).get(ANN_DEFAULT_SNAPSHOT_CLASS) == "true" and (
                c.get("driver") == driver
            ):
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
            if cstatus.get("error"):
                status["error"] = cstatus["error"]
            elif status.get("readyToUse"):
                status.pop("error", None)
            if status == o.get("status"):
                return None
            o["status"] = status
            return o

        before = (vs.get("status") or {}).get("readyToUse")
        after = self._store.mutate(VS, meta["namespace"], meta["name"], edit, subresource="status")
        if after is not None and not before and (after.get("status") or {}).get("readyToUse"):
            record_event(
                self._store,
                after,
                "VolumeSnapshot",
                "SnapshotReady",
                f"Snapshot {meta['namespace']}/{meta['name']} is ready to use.",
                component=COMPONENT,
            )

    def _protect_claim(self, vs: Obj, content: Obj) -> None:
        """The source claim keeps ``pvc-as-source-protection`` only while the snapshot is being cut."""
        claim = ((vs.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")
        cstatus = content.get("status") or {}
        if claim and (cstatus.get("readyToUse") or cstatus.get("error")):
            self._remove_finalizers(PVC, vs["metadata"]["namespace"], claim, (PVC_SOURCE_FINALIZER,))

    def _error(self, vs: Obj, message: str) -> None:
        meta = vs["metadata"]

        def edit(o: Obj) -> Obj | None:
            status = o.setdefault("status", {})
            if (status.get("error") or {}).get("message") == message:
                return None
            status.update(readyToUse=False, error={"message": message, "time": _rfc3339(time.time_ns())})
            return o

        before = self._store.find(VS, meta["namespace"], meta["name"])
        after = self._store.mutate(VS, meta["namespace"], meta["name"], edit, subresource="status")
        if after is not None and after is not before:
            record_event(
                self._store,
                vs,
                "VolumeSnapshot",
                "SnapshotCreationFailed",
                message,
                event_type="Warning",
                component=COMPONENT,
            )

    # ---- deletion ------------------------------------------------------------------------------------

    def _delete_snapshot(self, vs: Obj) -> None:
        meta = vs["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if self._restoring_from(namespace, name):
            return  # keeps as-source-protection until the claim restoring from it is provisioned
        bound = (vs.get("status") or {}).get("boundVolumeSnapshotContentName") or (
            (vs.get("spec") or {}).get("source") or {}
        ).get("volumeSnapshotContentName")
        content = self._store.find(VSC, "", bound) if bound else None
        ref = (content or {}).get("spec", {}).get("volumeSnapshotRef") or {}
        if content is not None and ref.get("uid") not in (None, "", meta["uid"]):
            content = None  # bound to another snapshot of that name: not ours to delete
        claim = ((vs.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")
        if claim:
            self._remove_finalizers(PVC, namespace, claim, (PVC_SOURCE_FINALIZER,))
        if content is not None and content["spec"].get("deletionPolicy") == "Delete":
            self._delete_content(content)
            self._remove_finalizers(VS, namespace, name, (VS_SOURCE_FINALIZER,))
            return  # the bound-protection finalizer goes once the content is gone
        self._remove_finalizers(VS, namespace, name, (VS_SOURCE_FINALIZER, VS_BOUND_FINALIZER))

    def _restoring_from(self, namespace: str, name: str) -> bool:
        for pvc in self._store.objects(PVC, namespace):
            source = (pvc.get("spec") or {}).get("dataSource") or (pvc.get("spec") or {}).get("dataSourceRef")
            if (
                source
                and source.get("kind") == "VolumeSnapshot"
                and source.get("name") == name
                and (pvc.get("status") or {}).get("phase") == "Pending"
                and not pvc["metadata"].get("deletionTimestamp")
            ):
                return True
        return False

    def _sync_snapshots_restoring_into(self, pvc: Obj) -> None:
        """A claim restoring from a snapshot being deleted got Bound: that deletion may go on now."""
        source = (pvc.get("spec") or {}).get("dataSource") or {}
        if source.get("kind") == "VolumeSnapshot" and source.get("name"):
            vs = self._store.find(VS, pvc["metadata"]["namespace"], source["name"])
            if vs is not None and vs["metadata"].get("deletionTimestamp"):
                self._delete_snapshot(vs)

    def _delete_content(self, content: Obj) -> None:
        name = content["metadata"]["name"]

        def annotate(o: Obj) -> Obj | None:
            ann = o["metadata"].setdefault("annotations", {})
            if ann.get(ANN_BEING_DELETED) == "yes":
                return None
            ann[ANN_BEING_DELETED] = "yes"
            return o

        self._store.mutate(VSC, "", name, annotate)
        try:
            self._store.delete(VSC, "", name, {})
        except ApiError as e:
            if e.code != 404:
                raise

    def _snapshot_gone(self, vs: Obj) -> None:
        """A snapshot disappeared (finalizers removed, or never had any): its Delete content goes too."""
        bound = (vs.get("status") or {}).get("boundVolumeSnapshotContentName")
        content = self._store.find(VSC, "", bound) if bound else None
        ref = (content or {}).get("spec", {}).get("volumeSnapshotRef") or {}
        if content is not None and ref.get("uid") in (None, "", vs["metadata"]["uid"]):
            self._sync_content(content["metadata"]["name"])

    # ---- contents ------------------------------------------------------------------------------------

    def _sync_content(self, name: str) -> None:
        content = self._store.find(VSC, "", name)
        if content is None:
            return
        ref = content["spec"].get("volumeSnapshotRef") or {}
        vs = self._store.find(VS, ref.get("namespace", ""), ref.get("name", ""))
        if vs is not None and ref.get("uid") not in (None, "", vs["metadata"]["uid"]):
            vs = None  # a newer snapshot of the same name: not this content's
        if content["metadata"].get("deletionTimestamp"):
            in_use = vs is not None and not vs["metadata"].get("deletionTimestamp")
            if not in_use:
                self._remove_finalizers(VSC, "", name, (CONTENT_FINALIZER,))
        elif vs is None and ref.get("uid") and content["spec"].get("deletionPolicy") == "Delete":
            self._delete_content(content)  # its snapshot is gone: the content goes with it
        if vs is not None:
            self._sync_snapshot(ref["namespace"], ref["name"])

    # ---- finalizer helpers ---------------------------------------------------------------------------

    def _add_finalizers(self, rt: Any, namespace: str, name: str, finalizers: tuple[str, ...]) -> None:
        def edit(o: Obj) -> Obj | None:
            meta = o["metadata"]
            if meta.get("deletionTimestamp"):
                return None  # no new finalizers on an object being deleted
            current = list(meta.get("finalizers") or [])
            missing = [f for f in finalizers if f not in current]
            if not missing:
                return None
            meta["finalizers"] = current + missing
            return o

        self._store.mutate(rt, namespace, name, edit)

    def _remove_finalizers(self, rt: Any, namespace: str, name: str, finalizers: tuple[str, ...]) -> None:
        def edit(o: Obj) -> Obj | None:
            current = list(o["metadata"].get("finalizers") or [])
            left = [f for f in current if f not in finalizers]
            if left == current:
                return None
            o["metadata"]["finalizers"] = left
            return o

        self._store.mutate(rt, namespace, name, edit)


def _rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))


def _quantity(size: int) -> str:
    for suffix, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)
