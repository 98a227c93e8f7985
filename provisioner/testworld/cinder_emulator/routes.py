"""Block Storage v3 routing for the Cinder emulator: URL + method + body → operation name and handler.

Why separate from the HTTP plumbing: the operation name is decided *before* anything runs, so injected
faults and latency apply per operation (the names the adapter uses), and the microversion gates (attachments
3.27, complete 3.44, like-filters 3.34, in-use extend 3.42) sit next to the URLs they gate.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from provisioner.testworld.cinder_emulator.state import TIME_OPERATORS, ApiError, invalid, not_found
from provisioner.testworld.cinder_emulator.store import Store

Result = tuple[int, Any]


@dataclass(frozen=True, slots=True)
class Route:
    """What a request does: ``run(store, max_limit, base_url)`` → (status, body)."""

    operation: str
    run: Callable[[Store, int, str], Result]


def _page(items: list[dict[str, Any]], key: str, query: dict[str, str], max_limit: int, url: str) -> Any:
    """Cinder's limit/marker pagination with a ``<key>_links`` next link."""
    marker = query.get("marker")
    if marker:
        ids = [i["id"] for i in items]
        if marker not in ids:
            raise ApiError(400, "badRequest", f"Marker {marker} could not be found.")
        items = items[ids.index(marker) + 1 :]
    try:
        limit = min(int(query.get("limit") or max_limit), max_limit)
    except ValueError:
        raise invalid("limit must be an integer") from None
    if limit < 1:
        raise invalid("limit must be >= 1")
    page = items[:limit]
    out: dict[str, Any] = {key: page}
    if len(items) > limit:
        q = {k: v for k, v in query.items() if k != "marker"}
        q.update({"limit": str(limit), "marker": page[-1]["id"]})
        out[f"{key}_links"] = [{"href": f"{url}?{urlencode(q)}", "rel": "next"}]
    return out


def _filters(query: dict[str, str], allowed: tuple[str, ...]) -> dict[str, Any]:
    """Query parameters Cinder filters on; ``metadata`` is a Python/JSON dict literal (as Cinder reads it)."""
    out: dict[str, Any] = {}
    for key in allowed:
        if key in query:
            value: Any = query[key]
            if key == "metadata":
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    try:
                        value = json.loads(value)
                    except ValueError:
                        raise invalid(f"Invalid metadata filter: {value}") from None
            elif key in ("created_at", "updated_at"):
                value = time_comparisons(str(value))
            out[key] = value
    return out


def time_comparisons(raw: str) -> dict[str, datetime]:
    """``gte:2026-12-02T07:00:00[,lt:…]`` → {operator: UTC time}, read as Cinder's API reads it.

    Cinder splits each unit at its first ``:`` and a unit without one is both operator and time (so
    ``2026`` is "Invalid 2026 operator" and ``gte`` "Invalid gte value"); the units land in a dict keyed by
    operator, so a repeated operator keeps its last time. A bad unit is Cinder's 400.
    """
    out: dict[str, datetime] = {}
    for unit in raw.split(","):
        operator, sep, text = unit.partition(":")
        if not sep:
            text = operator
        if operator not in TIME_OPERATORS:
            raise invalid(f"Invalid {operator} operator")
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise invalid(f"Invalid {text} value") from None
        out[operator] = when if when.tzinfo else when.replace(tzinfo=UTC)
    return out


def route(method: str, path: str, body: Any, version: tuple[int, int], query: dict[str, str]) -> Route:
    """Find the operation for a request under ``/v3/<project_id>``; unknown → 404 like Cinder."""
    segs = path.split("/")[3:]
    res = segs[0] if segs else ""
    ident = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else None
    body = body if isinstance(body, dict) else {}
    found: Route | None = None
    if res == "volumes":
        found = _volumes(method, path, ident=ident, sub=sub, body=body, version=version, query=query)
    elif res == "attachments" and version >= (3, 27):
        found = _attachments(method, ident, sub, body, version)
    elif res == "backups":
        found = _backups(method, path, ident=ident, sub=sub, body=body, query=query, version=version)
    elif res == "os-services" and method == "GET" and ident is None:
        binary = query.get("binary")
        found = Route("list_services", lambda s, _l, _b: (200, {"services": s.services(binary)}))
    elif res == "snapshots":
        found = _snapshots(method, path, ident=ident, sub=sub, body=body, query=query, version=version)
    elif res == "types" and method == "GET" and ident is None:

        def types(store: Store, _limit: int, _base: str) -> Result:
            kinds = [
                {"id": i, "name": n, "extra_specs": {}, "is_public": True} for n, i in store.types.items()
            ]
            return 200, {"volume_types": kinds}

        found = Route("list_types", types)
    if found is None:
        raise not_found("Resource", path)
    return found


def _volumes(
    method: str,
    path: str,
    *,
    ident: str | None,
    sub: str | None,
    body: dict[str, Any],
    version: tuple[int, int],
    query: dict[str, str],
) -> Route | None:
    if method == "POST" and ident is None:
        from_backup_ok = version >= (3, 47)  # 3.47: create a volume from a backup
        return Route(
            "create_volume",
            lambda s, _l, _b: (
                202,
                {"volume": s.create_volume(body.get("volume") or {}, from_backup_ok=from_backup_ok)},
            ),
        )
    if method == "GET" and ident in (None, "detail"):
        # Cinder's API reference dates created_at comparisons 3.60, but from 3.31 (generalized resource
        # filtering) Cinder passes every filter through and honours them; only older requests drop it
        # silently (its _MV_ADDED_FILTERS pop runs on the pre-3.31 path). Checked against real Cinder by
        # tests/contract/test_cinder_time_filters_wire.py.
        times = ("created_at",) if version >= (3, 31) else ()
        flt = _filters(query, ("name", "name~", "status", "metadata", "availability_zone", *times))

        def list_volumes(s: Store, limit: int, base: str) -> Result:
            items = s.list_volumes(flt, like_filters=version >= (3, 34))
            return 200, _page(items, "volumes", query, limit, base + path)

        return Route("list_volumes", list_volumes)
    if ident is None:
        return None
    vid: str = ident
    if sub is None and method == "GET":
        return Route("get_volume", lambda s, _l, _b: (200, {"volume": s.get_volume(vid)}))
    if sub is None and method == "DELETE":
        cascade = query.get("cascade", "").lower() == "true"

        def delete(s: Store, _l: int, _b: str) -> Result:
            s.delete_volume(vid, cascade=cascade)
            return 202, None

        return Route("delete_volume", delete)
    if sub == "metadata":
        new = body.get("metadata") or {}

        def metadata(s: Store, _l: int, _b: str) -> Result:
            if method == "GET":
                return 200, {"metadata": s.get_volume(vid)["metadata"]}
            return 200, {"metadata": s.set_metadata(vid, new, replace=method == "PUT")}

        # POST is the adapter's set_volume_metadata (faults and latency are injected by that name).
        return Route("set_volume_metadata" if method == "POST" else "volume_metadata", metadata)
    if sub == "action" and method == "POST":
        return _volume_action(vid, body, version)
    return None


def _volume_action(volume_id: str, body: dict[str, Any], version: tuple[int, int]) -> Route:
    action = next(iter(body), "")
    arg = body.get(action) or {}
    connector = arg.get("connector") or {} if isinstance(arg, dict) else {}

    def run(s: Store, _l: int, _b: str) -> Result:
        if action == "os-extend":
            s.extend(volume_id, arg.get("new_size"), inuse_allowed=version >= (3, 42))
        elif action == "os-reserve":
            s.reserve(volume_id)
        elif action == "os-unreserve":
            s.unreserve(volume_id)
        elif action == "os-initialize_connection":
            return 200, {"connection_info": s.initialize_connection(volume_id, connector)}
        elif action == "os-terminate_connection":
            s.terminate_connection(volume_id, connector)
        return 202, None

    names = {
        "os-extend": "extend_volume",
        "os-reserve": "reserve",
        "os-unreserve": "unreserve",
        "os-initialize_connection": "initialize_connection",
        "os-terminate_connection": "terminate_connection",
    }
    if action not in names:
        raise invalid(f"Invalid volume action: {action or '(none)'}")
    return Route(names[action], run)


def _attachments(
    method: str, ident: str | None, sub: str | None, body: dict[str, Any], version: tuple[int, int]
) -> Route | None:
    if method == "POST" and ident is None:
        a = body.get("attachment") or {}

        def create(s: Store, _l: int, _b: str) -> Result:
            att = s.create_attachment(
                str(a.get("volume_uuid") or ""),
                a.get("connector"),
                a.get("instance_uuid"),
                a.get("mode", "null"),
            )
            return 200, {"attachment": att}

        return Route("create_attachment", create)
    if ident is None:
        return None
    aid: str = ident
    if sub is None and method == "GET":
        return Route("get_attachment", lambda s, _l, _b: (200, {"attachment": s.get_attachment(aid)}))
    if sub is None and method == "DELETE":

        def delete(s: Store, _l: int, _b: str) -> Result:
            s.delete_attachment(aid)
            return 200, {"attachments": []}

        return Route("delete_attachment", delete)
    if sub == "action" and method == "POST" and "os-complete" in body and version >= (3, 44):

        def complete(s: Store, _l: int, _b: str) -> Result:
            s.complete_attachment(aid)
            return 204, None

        return Route("complete_attachment", complete)
    return None


def _snapshots(
    method: str,
    path: str,
    *,
    ident: str | None,
    sub: str | None,
    body: dict[str, Any],
    query: dict[str, str],
    version: tuple[int, int],
) -> Route | None:
    if method == "POST" and ident is None:
        snap = body.get("snapshot") or {}
        in_use_ok = version >= (3, 66)  # 3.66: in-use snapshots without force
        return Route(
            "create_snapshot",
            lambda s, _l, _b: (202, {"snapshot": s.create_snapshot(snap, in_use_ok=in_use_ok)}),
        )
    if method == "GET" and ident in (None, "detail"):
        flt = _filters(query, ("name", "status", "metadata", "volume_id"))

        def list_snapshots(s: Store, limit: int, base: str) -> Result:
            return 200, _page(s.list_snapshots(flt), "snapshots", query, limit, base + path)

        return Route("list_snapshots", list_snapshots)
    if ident is None or sub is not None:
        return None
    sid: str = ident
    if method == "GET":
        return Route("get_snapshot", lambda s, _l, _b: (200, {"snapshot": s.get_snapshot(sid)}))
    if method == "DELETE":

        def delete(s: Store, _l: int, _b: str) -> Result:
            s.delete_snapshot(sid)
            return 202, None

        return Route("delete_snapshot", delete)
    return None


def _backups(
    method: str,
    path: str,
    *,
    ident: str | None,
    sub: str | None,
    body: dict[str, Any],
    query: dict[str, str],
    version: tuple[int, int],
) -> Route | None:
    meta = version >= (3, 43)  # backup metadata
    if method == "POST" and ident is None:
        backup = body.get("backup") or {}
        return Route(
            "create_backup",
            lambda s, _l, _b: (202, {"backup": s.create_backup(backup, with_metadata=meta)}),
        )
    if method == "GET" and ident in (None, "detail"):
        flt = _filters(query, ("name", "status", "volume_id", *(("metadata",) if meta else ())))

        def list_backups(s: Store, limit: int, base: str) -> Result:
            return 200, _page(s.list_backups(flt, with_metadata=meta), "backups", query, limit, base + path)

        return Route("list_backups", list_backups)
    if ident is None:
        return None
    bid: str = ident
    if sub == "restore" and method == "POST":
        restore = body.get("restore") or {}
        return Route("restore_backup", lambda s, _l, _b: (202, {"restore": s.restore_backup(bid, restore)}))
    if sub is not None:
        return None
    if method == "GET":
        return Route("get_backup", lambda s, _l, _b: (200, {"backup": s.get_backup(bid, with_metadata=meta)}))
    if method == "DELETE":

        def delete(s: Store, _l: int, _b: str) -> Result:
            s.delete_backup(bid)
            return 202, None

        return Route("delete_backup", delete)
    return None
