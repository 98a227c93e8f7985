"""The three PATCH flavours the API server accepts, applied to plain JSON values.

The controller adds and removes finalizers and annotations by patch, and the difference between the
flavours is exactly where bugs hide: a merge patch replaces ``finalizers`` whole, a strategic-merge patch
merges it as a set (and ``$deleteFromPrimitiveList`` removes entries), a JSON patch ``test`` op makes a
removal conditional. These functions never mutate their inputs.
"""

from __future__ import annotations

import copy
from typing import Any

from provisioner.testworld.kube_sim.status import ApiError, bad_request

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def patch_types(builtin: bool) -> tuple[str, ...]:
    """The patch types a resource accepts, in the server's order (server-side apply is not simulated)."""
    return (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH) if builtin else (JSON_PATCH, MERGE_PATCH)


#: Lists merged as a set of primitives under strategic merge (``patchStrategy: merge`` on a scalar list).
_PRIMITIVE_MERGE_LISTS = frozenset({"finalizers"})
#: Lists of objects merged by a key field under strategic merge (``patchMergeKey``).
_KEYED_MERGE_LISTS: dict[str, str] = {
    "ownerReferences": "uid",
    "conditions": "type",
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "imagePullSecrets": "name",
    "addresses": "type",
    "taints": "key",
}


def _invalid_patch(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)


# --- RFC 7386 merge patch -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch: maps merge, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- strategic merge patch ------------------------------------------------------------------------------


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch with the list strategies of the fields the simulator knows."""
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch body must be a JSON object")
    return _smp_map(target if isinstance(target, dict) else {}, patch)


def _smp_map(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target)
    deletions: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            if not isinstance(value, list):
                raise bad_request(f"{key} must be a list")
            deletions[key.split("/", 1)[1]] = value
            continue
        if key.startswith(("$setElementOrder/", "$retainKeys", "$patch")):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            old = result.get(key)
            merged = _smp_map(old if isinstance(old, dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(key, result.get(key), value)
        else:
            result[key] = value
    for key, values in deletions.items():
        current = result.get(key)
        if isinstance(current, list):
            remaining = [v for v in current if v not in values]
            if remaining:
                result[key] = remaining
            else:
                result.pop(key, None)
    return result


def _smp_list(field: str, old: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    old_list: list[Any] = list(old) if isinstance(old, list) else []
    if field in _PRIMITIVE_MERGE_LISTS:
        merged = list(old_list)
        for item in patch:
            if item not in merged:
                merged.append(item)
        return merged
    merge_key = _KEYED_MERGE_LISTS.get(field)
    if merge_key is None or not all(isinstance(i, dict) for i in patch):
        return copy.deepcopy(patch)
    merged = list(old_list)
    for item in patch:
        key_value = item.get(merge_key)
        index = next(
            (i for i, o in enumerate(merged) if isinstance(o, dict) and o.get(merge_key) == key_value), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append(copy.deepcopy(item))
        else:
            new_item = _smp_map(merged[index], item)
            if new_item is not None:
                merged[index] = new_item
    return merged


# --- RFC 6902 JSON patch --------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _invalid_patch(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for part in parts[:-1]:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise _invalid_patch(f"doc is missing path: {path!r}")
    return cur


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise _invalid_patch(f"doc is missing path: {path!r}")


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise _invalid_patch("cannot remove the whole document")
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _invalid_patch(f"unable to remove nonexistent key: {last}: missing value")


def _add(doc: Any, path: str, value: Any, *, replace: bool) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise _invalid_patch(f"replace operation does not apply: doc is missing key: {path}")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise _invalid_patch(f"index out of range in path {path!r}")
    else:
        raise _invalid_patch(f"doc is missing path: {path!r}")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch; a failed ``test`` or a missing path is a 422 like the API server's."""
    if not isinstance(ops, list):
        raise bad_request("json patch body must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "test":
            if _get(doc, path) != op.get("value"):
                raise _invalid_patch(
                    f"the server rejected our request due to an error in our request: "
                    f"testing value {path} failed: test failed"
                )
        elif kind == "remove":
            _remove(doc, path)
        elif kind in ("add", "replace"):
            if "value" not in op:
                raise bad_request(f"json patch {kind} operation needs a value")
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=kind == "replace")
        elif kind == "move":
            value = _remove(doc, op.get("from", ""))
            doc = _add(doc, path, value, replace=False)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op.get("from", ""))), replace=False)
        else:
            raise bad_request(f"unknown json patch operation {kind!r}")
    return doc
