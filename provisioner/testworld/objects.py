"""Builders for the Kubernetes objects the sandbox, the chaos harness, the benchmark and the tests create."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.domain import names


def storage_class(
    name: str,
    parameters: Mapping[str, str],
    *,
    reclaim: str = "Delete",
    binding: str = "Immediate",
    mount_options: list[str] | None = None,
    provisioner: str = names.DEFAULT_PROVISIONER_NAME,
) -> dict[str, Any]:
    """A StorageClass served by our provisioner."""
    body: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": provisioner,
        "parameters": dict(parameters),
        "reclaimPolicy": reclaim,
        "volumeBindingMode": binding,
    }
    if mount_options:
        body["mountOptions"] = list(mount_options)
    return body


def claim(
    name: str,
    storage_class_name: str,
    *,
    size: str = "1Gi",
    namespace: str = "default",
    access: str = "ReadWriteOnce",
    annotations: Mapping[str, str] | None = None,
    data_source: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A PersistentVolumeClaim on ``storage_class_name``."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
        "spec": {
            "accessModes": [access],
            "storageClassName": storage_class_name,
            "resources": {"requests": {"storage": size}},
        },
    }
    if data_source:
        body["spec"]["dataSource"] = dict(data_source)
    return body


def emulator_cloud(keystone_url: str, username: str, password: str, project_id: str) -> dict[str, Any]:
    """A ``clouds`` entry that logs in to the Cinder emulator's Keystone with a password."""
    return {
        "auth_type": "password",
        "auth": {
            "auth_url": keystone_url,
            "username": username,
            "password": password,
            "project_id": project_id,
            "user_domain_name": "Default",
        },
    }
