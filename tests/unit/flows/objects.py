"""Small builders of the Kubernetes objects the flow tests need."""

from __future__ import annotations

from typing import Any

from provisioner.domain import names
from provisioner.mapping.build import secret_name_for

PROVISIONER = names.DEFAULT_PROVISIONER_NAME


def storage_class(name: str = "fast", **parameters: str) -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": PROVISIONER,
        "parameters": dict(parameters),
    }


def pv(
    name: str = "pvc-u1",
    *,
    volume_id: str | None = "v1",
    attachment_id: str | None = "a1",
    mode: str = "attachment",
    cloud: str | None = "default",
    phase: str = "Released",
    policy: str = "Delete",
    deleting: bool = False,
    finalizer: bool = True,
    claim_uid: str = "u1",
    storage_class_name: str = "fast",
    secrets_in: str | None = "netvol-system",
) -> dict[str, Any]:
    ann = {names.ANN_PROVISIONED_BY: PROVISIONER, names.ANN_EXPORT_MODE: mode}
    if volume_id is not None:
        ann[names.ANN_VOLUME_ID] = volume_id
    if attachment_id is not None:
        ann[names.ANN_ATTACHMENT_ID] = attachment_id
    if cloud is not None:
        ann[names.ANN_CLOUD] = cloud
    meta: dict[str, Any] = {"name": name, "uid": f"pv-uid-{name}", "annotations": ann}
    if finalizer:
        meta["finalizers"] = [names.PV_VOLUME_FINALIZER]
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {
        "persistentVolumeReclaimPolicy": policy,
        "storageClassName": storage_class_name,
        "claimRef": {"namespace": "ns", "name": "data", "uid": claim_uid},
    }
    if secrets_in:
        spec["rbd"] = {"secretRef": {"name": secret_name_for(name), "namespace": secrets_in}}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": phase},
    }


def pvc(
    uid: str = "u1",
    *,
    name: str = "data",
    namespace: str = "ns",
    storage_class_name: str = "fast",
    cloud: str | None = None,
    deleting: bool = True,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "finalizers": [names.PVC_PROVISIONING_FINALIZER],
        "annotations": {names.ANN_STORAGE_PROVISIONER: PROVISIONER},
    }
    if cloud is not None:
        meta["annotations"][names.ANN_CLOUD] = cloud
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": {"storageClassName": storage_class_name, "resources": {"requests": {"storage": "1Gi"}}},
    }


def claim_metadata(uid: str = "u1", cluster: str = "cluster-a") -> dict[str, str]:
    return {names.META_CLUSTER: cluster, names.META_PVC_UID: uid}
