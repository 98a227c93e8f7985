"""Pure object rules of the API server: timestamps, copies, update preparation, patches, managedFields.

Kept apart from the store so the store module is only about concurrency (locks, resourceVersions,
history, fan-out) and these rules can be read — and changed — in one place.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from provisioner.testworld.kube_sim import patch as patches
from provisioner.testworld.kube_sim import status as errors
from provisioner.testworld.kube_sim.resources import ResourceType
from provisioner.testworld.kube_sim.validation import apply_defaults, validate_update

Obj = dict[str, Any]

_SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
_NON_SPEC = frozenset({"metadata", "status", "kind", "apiVersion"})


def now_rfc3339() -> str:
    """Current time as the API server formats ``metav1.Time``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clone(obj: Obj) -> Obj:
    """A deep copy of a JSON object (faster than copy.deepcopy for JSON data)."""
    result: Obj = json.loads(json.dumps(obj))
    return result


def comparable(obj: Obj) -> Obj:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


def prepare_update(rt: ResourceType, old: Obj, new: Obj, *, subresource: str) -> Obj:
    """The object an update of ``old`` with body ``new`` stores (``new`` is consumed), or an ApiError.

    Keeps server-owned metadata, applies status-subresource rules, defaults, immutability and the
    no-new-finalizers-while-deleting rule, and bumps ``generation`` when anything but metadata/status changed.
    """
    old_meta = old["metadata"]
    name = old_meta["name"]
    new_meta = new.setdefault("metadata", {})
    if new_meta.get("name", name) != name:
        raise errors.bad_request(
            f"the name of the object ({new_meta.get('name')}) does not match the name on the URL ({name})"
        )
    if rt.namespaced and new_meta.get("namespace", old_meta["namespace"]) != old_meta["namespace"]:
        raise errors.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    if new_meta.get("uid") and new_meta["uid"] != old_meta["uid"]:
        raise errors.conflict(
            rt,
            name,
            f"Precondition failed: UID in precondition: {new_meta['uid']}, "
            f"UID in object meta: {old_meta['uid']}",
        )
    if subresource == "status":
        result = {k: v for k, v in old.items() if k != "status"}
        if new.get("status") is not None:
            result["status"] = new["status"]
        meta = dict(old_meta)
        for field in ("labels", "annotations"):
            if new_meta.get(field):
                meta[field] = new_meta[field]
            else:
                meta.pop(field, None)
        result["metadata"] = meta
    else:
        result = new
        result["kind"], result["apiVersion"] = rt.kind, rt.api_version
        if rt.status_subresource:
            result.pop("status", None)
            if old.get("status") is not None:
                result["status"] = old["status"]
        for field in (*_SYSTEM_META, "namespace", "name", "managedFields"):
            if field in old_meta:
                new_meta[field] = old_meta[field]
            else:
                new_meta.pop(field, None)
        apply_defaults(rt, result)
        validate_update(rt, old, result)
        if old_meta.get("deletionTimestamp"):
            added = [
                f for f in new_meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])
            ]
            if added:
                raise errors.invalid(
                    rt,
                    name,
                    [
                        (
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be "
                            f"added if the object is being deleted, found new finalizers {added}",
                        )
                    ],
                )
        if {k: v for k, v in old.items() if k not in _NON_SPEC} != {
            k: v for k, v in result.items() if k not in _NON_SPEC
        }:
            new_meta["generation"] = int(old_meta.get("generation", 1)) + 1
    return result


def apply_patch(rt: ResourceType, old: Obj, content_type: str, body: Any) -> Obj:
    """``old`` patched per ``content_type``: merge, strategic merge (built-in kinds only, else 415), JSON."""
    base = clone(old)
    if content_type == patches.MERGE_PATCH:
        patched = patches.merge_patch(base, body)
    elif content_type == patches.STRATEGIC_MERGE_PATCH and rt.builtin:
        patched = patches.strategic_merge_patch(base, body)
    elif content_type == patches.JSON_PATCH:
        patched = patches.json_patch(base, body)
    else:
        raise errors.unsupported_media_type(patches.patch_types(rt.builtin))
    if not isinstance(patched, dict) or not isinstance(patched.get("metadata", {}), dict):
        raise errors.ApiError(422, "Invalid", "patched object is not a valid object")
    return patched


def check_kind(rt: ResourceType, body: Obj) -> None:
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version):
        raise errors.bad_request(
            f"the API version in the data ({api_version}) / kind ({kind}) does not match the expected "
            f"API version ({rt.api_version}) / kind ({rt.kind})"
        )
    body["kind"], body["apiVersion"] = rt.kind, rt.api_version


def record_manager(obj: Obj, manager: str, operation: str, subresource: str = "") -> None:
    manager = manager or "unknown"
    entries = [
        e
        for e in obj["metadata"].get("managedFields") or []
        if not (e.get("manager") == manager and e.get("subresource", "") == subresource)
    ]
    entry: Obj = {
        "manager": manager,
        "operation": operation,
        "apiVersion": obj["apiVersion"],
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {}},
    }
    if subresource:
        entry["subresource"] = subresource
    entries.append(entry)
    obj["metadata"]["managedFields"] = entries
