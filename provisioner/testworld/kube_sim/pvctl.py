"""The slice of kube-controller-manager's PV controller and protection controllers our provisioner sees.

An external provisioner only works because the PV controller announces claims (handshake annotations and
the ``ExternalProvisioning`` event), binds the pre-bound PV it creates, and marks the PV ``Released`` when
the claim goes; protection finalizers decide when deletions complete. Lookups go through an index
claim → PVs maintained from the change feed, so a 1,000-claim burst over 10,000 PVs stays linear.
"""

from __future__ import annotations

import secrets
from typing import Any

from provisioner.testworld.kube_sim.objects import now_rfc3339
from provisioner.testworld.kube_sim.recorder import EventRecorder
from provisioner.testworld.kube_sim.resources import by_plural
from provisioner.testworld.kube_sim.status import ApiError
from provisioner.testworld.kube_sim.store import Store
from provisioner.testworld.kube_sim.watchers import DELETED, Change

Obj = dict[str, Any]

PVC = by_plural("persistentvolumeclaims")
PV = by_plural("persistentvolumes")
POD = by_plural("pods")
EVENT = by_plural("events")
SC = by_plural("storageclasses", "storage.k8s.io")

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
ANN_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
ANN_BETA_CLASS = "volume.beta.kubernetes.io/storage-class"
ANN_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
#: Set on a PV by the resizer while the node still has to grow the volume: the claim keeps its old capacity
ANN_PRE_RESIZE_CAPACITY = "volume.alpha.kubernetes.io/pre-resize-capacity"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
COMPONENT = "persistentvolume-controller"


def claim_class(pvc: Obj) -> str:
    """The claim's StorageClass name (spec, else the beta annotation)."""
    name = (pvc.get("spec") or {}).get("storageClassName")
    if name is None:
        name = (pvc["metadata"].get("annotations") or {}).get(ANN_BETA_CLASS, "")
    return str(name or "")


def record_event(
    store: Store,
    involved: Obj,
    kind: str,
    reason: str,
    message: str,
    *,
    event_type: str = "Normal",
    component: str = COMPONENT,
) -> None:
    """Create a core/v1 Event about ``involved`` like a controller's event recorder."""
    meta = involved["metadata"]
    ns = meta.get("namespace") or "default"
    ts = now_rfc3339()
    event = {
        "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": ns},
        "involvedObject": {
            "kind": kind,
            "namespace": meta.get("namespace", ""),
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": involved.get("apiVersion", "v1"),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "count": 1,
        "source": {"component": component},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "reportingComponent": component,
        "reportingInstance": "",
    }
    try:
        store.create(EVENT, ns, event, manager="kube-controller-manager")
    except ApiError:
        pass  # namespace gone: the recorder drops the event


class PVController:
    """Handshake, binding, Released/Lost, and the pv/pvc protection finalizers."""

    def __init__(self, store: Store, *, binder: bool, protection: bool) -> None:
        self._store = store
        self._binder = binder
        self._protection = protection
        self._claim_pvs: dict[tuple[str, str], set[str]] = {}
        self._announced: dict[str, set[str]] = {}  # pvc uid -> reasons of events already recorded
        self._recorder = EventRecorder(store, COMPONENT)  # for events repeated on every sync

    # --- change feed -------------------------------------------------------------------------------------

    def handle(self, change: Change) -> None:
        """React to one committed change."""
        if change.resource == PV.key:
            self._index_pv(change)
            if change.type == DELETED:
                self._pv_deleted(change.new)
            else:
                self._sync_pv(change.new["metadata"]["name"])
        elif change.resource == PVC.key:
            meta = change.new["metadata"]
            key = (meta["namespace"], meta["name"])
            if change.type == DELETED:
                self._announced.pop(meta["uid"], None)
                self._recorder.forget(meta["uid"])
                for pv_name in list(self._claim_pvs.get(key, ())):
                    self._sync_pv(pv_name)
            else:
                self._sync_pvc(*key)
        elif change.resource == POD.key and self._protection:
            self._pod_changed(change)
        elif change.resource == SC.key and change.type != DELETED and self._binder:
            for pvc in self._store.objects(PVC):
                if not pvc["spec"].get("volumeName") and claim_class(pvc) == change.new["metadata"]["name"]:
                    self._sync_pvc(pvc["metadata"]["namespace"], pvc["metadata"]["name"])

    def _index_pv(self, change: Change) -> None:
        name = change.new["metadata"]["name"]
        for obj, add in ((change.old, False), (None if change.type == DELETED else change.new, True)):
            ref = (obj or {}).get("spec", {}).get("claimRef")
            if not ref:
                continue
            key = (ref.get("namespace", ""), ref.get("name", ""))
            if add:
                self._claim_pvs.setdefault(key, set()).add(name)
            elif key in self._claim_pvs:
                self._claim_pvs[key].discard(name)
                if not self._claim_pvs[key]:
                    del self._claim_pvs[key]

    # --- claims ------------------------------------------------------------------------------------------

    def _sync_pvc(self, namespace: str, name: str) -> None:
        pvc = self._store.find(PVC, namespace, name)
        if pvc is None:
            return
        if self._protection and pvc["metadata"].get("deletionTimestamp"):
            self._release_pvc_protection(pvc)
        if not self._binder or pvc["metadata"].get("deletionTimestamp"):
            return
        volume_name = pvc["spec"].get("volumeName")
        if volume_name:
            pv = self._store.find(PV, "", volume_name)
            if pv is None:
                if (pvc.get("status") or {}).get("phase") == "Bound":
                    self._set_pvc_phase(pvc, "Lost")
                    record_event(
                        self._store,
                        pvc,
                        "PersistentVolumeClaim",
                        "ClaimLost",
                        "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                        event_type="Warning",
                    )
                return
            if self._claim_matches(pv, pvc):
                self._bind(pv, pvc)
            return
        for pv_name in sorted(self._claim_pvs.get((namespace, name), ())):
            pv = self._store.find(PV, "", pv_name)
            if (
                pv is not None
                and not pv["metadata"].get("deletionTimestamp")
                and self._claim_matches(pv, pvc)
            ):
                self._bind(pv, pvc)
                return
        self._handshake(pvc)

    def resync(self) -> None:
        """The periodic resync, as far as it shows: unbound claims naming a missing class warn again."""
        if not self._binder:
            return
        for pvc in self._store.objects(PVC):
            class_name = claim_class(pvc)
            if (
                class_name
                and not pvc["spec"].get("volumeName")
                and not pvc["metadata"].get("deletionTimestamp")
                and self._store.find(SC, "", class_name) is None
            ):
                self._sync_pvc(pvc["metadata"]["namespace"], pvc["metadata"]["name"])

    def _handshake(self, pvc: Obj) -> None:
        class_name = claim_class(pvc)
        sc = self._store.find(SC, "", class_name) if class_name else None
        if sc is None and class_name:
            # provisionClaim -> findProvisionablePlugin: the class lister's NotFound, on every sync
            self._recorder.record(
                pvc,
                "PersistentVolumeClaim",
                "ProvisioningFailed",
                f'storageclass.storage.k8s.io "{class_name}" not found',
                event_type="Warning",
            )
            return
        if sc is None or not sc.get("provisioner") or sc["provisioner"] == NO_PROVISIONER:
            return
        annotations = pvc["metadata"].get("annotations") or {}
        uid = pvc["metadata"]["uid"]
        if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and not annotations.get(ANN_SELECTED_NODE):
            if self._first(uid, "WaitForFirstConsumer"):
                record_event(
                    self._store,
                    pvc,
                    "PersistentVolumeClaim",
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                )
            return
        provisioner = sc["provisioner"]

        def annotate(o: Obj) -> Obj | None:
            ann = o["metadata"].setdefault("annotations", {})
            if ann.get(ANN_PROVISIONER) == provisioner and ann.get(ANN_BETA_PROVISIONER) == provisioner:
                return None
            ann[ANN_PROVISIONER] = ann[ANN_BETA_PROVISIONER] = provisioner
            return o

        updated = self._store.mutate(PVC, pvc["metadata"]["namespace"], pvc["metadata"]["name"], annotate)
        if updated is not None and self._first(uid, "ExternalProvisioning"):
            record_event(
                self._store,
                updated,
                "PersistentVolumeClaim",
                "ExternalProvisioning",
                f"Waiting for a volume to be created either by the external provisioner '{provisioner}' "
                "or manually by the system administrator. If volume creation is delayed, please verify "
                "that the provisioner is running and correctly registered.",
            )

    def _first(self, uid: str, reason: str) -> bool:
        """True the first time ``reason`` is announced for this claim."""
        seen = self._announced.setdefault(uid, set())
        if reason in seen:
            return False
        seen.add(reason)
        return True

    @staticmethod
    def _claim_matches(pv: Obj, pvc: Obj) -> bool:
        ref = pv["spec"].get("claimRef") or {}
        meta = pvc["metadata"]
        return (
            ref.get("namespace") == meta["namespace"]
            and ref.get("name") == meta["name"]
            and ref.get("uid", "") in ("", meta["uid"])
            and pvc["spec"].get("volumeName") in (None, "", pv["metadata"]["name"])
        )

    def _bind(self, pv: Obj, pvc: Obj) -> None:
        pv_name, pvc_meta = pv["metadata"]["name"], pvc["metadata"]

        def claim_uid(o: Obj) -> Obj | None:
            ref = o["spec"]["claimRef"]
            if ref.get("uid") == pvc_meta["uid"]:
                return None
            ref.update(uid=pvc_meta["uid"], kind="PersistentVolumeClaim", apiVersion="v1")
            return o

        self._store.mutate(PV, "", pv_name, claim_uid)
        self._store.mutate(PV, "", pv_name, lambda o: _phase(o, "Bound"), subresource="status")

        def volume_name(o: Obj) -> Obj | None:
            ann = o["metadata"].setdefault("annotations", {})
            if o["spec"].get("volumeName") == pv_name and ann.get(ANN_BIND_COMPLETED) == "yes":
                return None
            if not o["spec"].get("volumeName"):
                o["spec"]["volumeName"] = pv_name
                ann[ANN_BOUND_BY_CONTROLLER] = "yes"
            ann[ANN_BIND_COMPLETED] = "yes"
            return o

        ns, name = pvc_meta["namespace"], pvc_meta["name"]
        self._store.mutate(PVC, ns, name, volume_name)

        def bound_status(o: Obj) -> Obj | None:
            capacity = dict(pv["spec"].get("capacity") or {})
            pre_resize = (pv["metadata"].get("annotations") or {}).get(ANN_PRE_RESIZE_CAPACITY)
            if pre_resize:  # a resize waits for the node: the claim keeps (or gets) the old capacity
                capacity = dict((o.get("status") or {}).get("capacity") or {"storage": pre_resize})
            status = {
                **(o.get("status") or {}),
                "phase": "Bound",
                "accessModes": pv["spec"].get("accessModes", []),
                "capacity": capacity,
            }
            if o.get("status") == status:
                return None
            o["status"] = status
            return o

        self._store.mutate(PVC, ns, name, bound_status, subresource="status")

    def _set_pvc_phase(self, pvc: Obj, phase: str) -> None:
        meta = pvc["metadata"]
        self._store.mutate(
            PVC, meta["namespace"], meta["name"], lambda o: _phase(o, phase), subresource="status"
        )

    def _release_pvc_protection(self, pvc: Obj) -> None:
        meta = pvc["metadata"]
        if PVC_PROTECTION not in (meta.get("finalizers") or []):
            return
        for pod in self._store.objects(POD, meta["namespace"]):
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            for vol in (pod.get("spec") or {}).get("volumes") or []:
                if (vol.get("persistentVolumeClaim") or {}).get("claimName") == meta["name"]:
                    return  # still in use
        self._store.mutate(PVC, meta["namespace"], meta["name"], lambda o: _drop_finalizer(o, PVC_PROTECTION))

    def _pod_changed(self, change: Change) -> None:
        pod = change.new
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                self._sync_pvc(pod["metadata"]["namespace"], claim)

    # --- volumes -----------------------------------------------------------------------------------------

    def _sync_pv(self, name: str) -> None:
        pv = self._store.find(PV, "", name)
        if pv is None:
            return
        phase = (pv.get("status") or {}).get("phase")
        if self._binder:
            ref = pv["spec"].get("claimRef")
            if not ref:
                if phase not in ("Available", "Released", "Failed"):
                    self._store.mutate(PV, "", name, lambda o: _phase(o, "Available"), subresource="status")
            else:
                pvc = self._store.find(PVC, ref.get("namespace", ""), ref.get("name", ""))
                if pvc is not None and self._claim_matches(pv, pvc):
                    self._sync_pvc(ref["namespace"], ref["name"])
                elif ref.get("uid") and (pvc is None or pvc["metadata"]["uid"] != ref["uid"]):
                    if phase not in ("Released", "Failed"):
                        self._store.mutate(
                            PV, "", name, lambda o: _phase(o, "Released"), subresource="status"
                        )
                elif phase not in ("Available", "Released", "Failed"):
                    self._store.mutate(PV, "", name, lambda o: _phase(o, "Available"), subresource="status")
            pv = self._store.find(PV, "", name) or pv
            phase = (pv.get("status") or {}).get("phase")
        if self._protection and pv["metadata"].get("deletionTimestamp") and phase != "Bound":
            self._store.mutate(PV, "", name, lambda o: _drop_finalizer(o, PV_PROTECTION))

    def _pv_deleted(self, pv: Obj) -> None:
        ref = pv["spec"].get("claimRef") or {}
        pvc = self._store.find(PVC, ref.get("namespace", ""), ref.get("name", "")) if ref else None
        if pvc is not None and pvc["spec"].get("volumeName") == pv["metadata"]["name"]:
            self._sync_pvc(ref["namespace"], ref["name"])


def _phase(obj: Obj, phase: str) -> Obj | None:
    if (obj.get("status") or {}).get("phase") == phase:
        return None
    obj.setdefault("status", {})["phase"] = phase
    return obj


def _drop_finalizer(obj: Obj, finalizer: str) -> Obj | None:
    fins = obj["metadata"].get("finalizers") or []
    if finalizer not in fins:
        return None
    obj["metadata"]["finalizers"] = [f for f in fins if f != finalizer]
    return obj
