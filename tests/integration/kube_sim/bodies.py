"""Minimal valid object bodies for the simulator tests."""

from __future__ import annotations

from typing import Any


def pvc_body(name: str, *, storage_class: str | None = "fast", **meta: Any) -> dict[str, Any]:
    """A minimal valid PVC."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {"metadata": {"name": name, **meta}, "spec": spec}


def pv_body(name: str, *, claim: tuple[str, str, str] | None = None, handle: str = "vol-1") -> dict[str, Any]:
    """A minimal valid CSI PV, optionally pre-bound to (namespace, name, uid)."""
    spec: dict[str, Any] = {
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"],
        "csi": {"driver": "cinder.netvol.io", "volumeHandle": handle},
        "storageClassName": "fast",
        "persistentVolumeReclaimPolicy": "Delete",
    }
    if claim is not None:
        spec["claimRef"] = {"namespace": claim[0], "name": claim[1], "uid": claim[2]}
    return {"metadata": {"name": name}, "spec": spec}


def storage_class_body(name: str = "fast", *, wait_for_consumer: bool = False) -> dict[str, Any]:
    """A StorageClass for our provisioner."""
    return {
        "metadata": {"name": name},
        "provisioner": "netvol.io/cinder",
        "volumeBindingMode": "WaitForFirstConsumer" if wait_for_consumer else "Immediate",
    }
