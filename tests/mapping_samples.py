"""Sample inputs for the mapping and ``render`` tests: files in ``tests/samples`` plus small builders.

Kept outside ``tests/unit`` so other suites (controller e2e) can reuse the same connection infos and
objects: ``from tests.mapping_samples import load_sample, storage_class, claim``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Final

import yaml

from provisioner.domain.model import ConnectionInfo
from provisioner.domain.params import parse_class_parameters
from provisioner.mapping.build import MappedObjects, ProvisionedVolume, build_objects

SAMPLES: Final = Path(__file__).parent / "samples"
PVC_UID: Final = "6d3c1c3e-8d0a-4d87-9d1b-0b8d3f3e2a11"
PV_NAME: Final = f"pvc-{PVC_UID}"
VOLUME_ID: Final = "3f1c2a9e-5b7d-4e2a-9c41-0d8e6f7a1b23"
INITIATOR: Final = "iqn.2024-01.io.netvol:provisioner"
PROVISIONER: Final = "netvol.io/cinder"
SECRET_NAMESPACE: Final = "cinder-provisioner"


def load_sample(name: str) -> Any:
    """A file from ``tests/samples`` (JSON or YAML), freshly parsed."""
    text = (SAMPLES / name).read_text(encoding="utf-8")
    return json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


def rbd_data(**overrides: Any) -> dict[str, Any]:
    """The rbd connection ``data`` real Cinder returned here, with overrides (None deletes a key)."""
    data = copy.deepcopy(load_sample("ci-rbd-real.json")["data"])
    return _apply(data, overrides)


def iscsi_data(**overrides: Any) -> dict[str, Any]:
    """A single-portal iscsi connection ``data`` (LVM driver shape), with overrides (None deletes)."""
    data = copy.deepcopy(load_sample("ci-iscsi-single.json")["data"])
    return _apply(data, overrides)


def _apply(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def storage_class(parameters: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """A StorageClass for our provisioner; ``fields`` set top-level keys (reclaimPolicy, mountOptions…)."""
    sc: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "cinder"},
        "provisioner": PROVISIONER,
        "parameters": dict(parameters or {}),
    }
    sc.update(fields)
    return sc


def claim(
    *,
    access_modes: tuple[str, ...] = ("ReadWriteOnce",),
    volume_mode: str | None = None,
    storage: str = "1Gi",
    uid: str = PVC_UID,
) -> dict[str, Any]:
    """A PVC as the API serves it."""
    spec: dict[str, Any] = {
        "accessModes": list(access_modes),
        "storageClassName": "cinder",
        "resources": {"requests": {"storage": storage}},
    }
    if volume_mode is not None:
        spec["volumeMode"] = volume_mode
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"namespace": "shop", "name": "data", "uid": uid},
        "spec": spec,
    }


def volume(**overrides: Any) -> ProvisionedVolume:
    """A ProvisionedVolume exported through a v3 attachment, with overrides."""
    values: dict[str, Any] = {
        "volume_id": VOLUME_ID,
        "size_gib": 1,
        "cloud": "default",
        "attachment_id": "att-1",
        "export_mode": "attachment",
        "initiator_name": INITIATOR,
    }
    values.update(overrides)
    return ProvisionedVolume(**values)


def build(
    driver_volume_type: str,
    data: dict[str, Any],
    *,
    parameters: dict[str, str] | None = None,
    sc: dict[str, Any] | None = None,
    pvc: dict[str, Any] | None = None,
    vol: ProvisionedVolume | None = None,
) -> MappedObjects:
    """Run the real builder on these inputs (class parameters parsed as the controller does)."""
    sc = sc if sc is not None else storage_class(parameters)
    params = parse_class_parameters(sc.get("parameters"), default_secret_namespace=SECRET_NAMESPACE)
    return build_objects(
        connection_info=ConnectionInfo(driver_volume_type=driver_volume_type, data=data),
        storage_class=sc,
        pvc=pvc if pvc is not None else claim(),
        params=params,
        volume=vol if vol is not None else volume(),
        provisioner_name=PROVISIONER,
    )
