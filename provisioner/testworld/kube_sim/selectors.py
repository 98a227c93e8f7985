"""Label and field selectors, parsed once per request and matched per object.

Informers filter by selectors on both list and watch; a watch must turn "stopped matching" into a DELETED
event and "started matching" into ADDED, so matching is a cheap predicate over a stored object.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provisioner.testworld.kube_sim.resources import ResourceType
from provisioner.testworld.kube_sim.status import bad_request

Obj = dict[str, Any]

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_SET_REQ = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_REQ = re.compile(r"^\s*([^\s!=()]+)\s*(==|!=|=)\s*([^\s!=()]*)\s*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirement:
    """One clause: ``key op values``; op is one of ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!``."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, value: str | None) -> bool:
        """Whether a label/field value (None = absent) satisfies this clause."""
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        if self.op in ("!=", "notin"):
            return value is None or value not in self.values
        if self.op == "exists":
            return value is not None
        return value is None  # "!"


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse ``labelSelector``; raise 400 on syntax errors like the API server."""
    if not text:
        return ()
    reqs: list[Requirement] = []
    for part in _split_top_level(text):
        m = _EQ_REQ.match(part)
        if m:
            key, op, value = m.groups()
            reqs.append(
                Requirement(key=_key(key, text), op="!=" if op == "!=" else "=", values=frozenset([value]))
            )
            continue
        m = _SET_REQ.match(part)
        if not m:
            raise bad_request(f"unable to parse requirement: {part!r} in selector {text!r}")
        neg, key, op, values = m.groups()
        if op:
            if neg:
                raise bad_request(f"unable to parse requirement: {part!r}")
            vals = frozenset(v.strip() for v in values.split(",") if v.strip())
            reqs.append(Requirement(key=_key(key, text), op=op, values=vals))
        else:
            reqs.append(Requirement(key=_key(key, text), op="!" if neg else "exists"))
    return tuple(reqs)


def _key(key: str, text: str) -> str:
    if not _LABEL_KEY.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in selector {text!r}")
    return key


def parse_field_selector(text: str | None, rt: ResourceType) -> tuple[Requirement, ...]:
    """Parse ``fieldSelector`` (``=``, ``==``, ``!=`` only) and reject fields the kind does not index."""
    if not text:
        return ()
    allowed = supported_fields(rt)
    reqs: list[Requirement] = []
    for part in _split_top_level(text):
        m = _EQ_REQ.match(part)
        if not m:
            raise bad_request(f"invalid selector: {text!r}; can't understand {part!r}")
        key, op, value = m.groups()
        if key not in allowed:
            raise bad_request(f'field label not supported: "{key}"')
        reqs.append(Requirement(key=key, op="!=" if op == "!=" else "=", values=frozenset([value])))
    return tuple(reqs)


_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
_EXTRA_FIELDS: dict[str, tuple[str, ...]] = {
    "core/events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "events.k8s.io/events": (
        "regarding.kind",
        "regarding.name",
        "regarding.namespace",
        "regarding.uid",
        "reason",
        "type",
    ),
    "core/pods": ("spec.nodeName", "spec.serviceAccountName", "status.phase", "status.podIP"),
    "core/secrets": ("type",),
    "core/nodes": ("spec.unschedulable",),
    "core/namespaces": ("status.phase",),
    "core/persistentvolumeclaims": ("spec.volumeName",),
}


def supported_fields(rt: ResourceType) -> frozenset[str]:
    """Field selector keys accepted for ``rt``."""
    return frozenset(_COMMON_FIELDS + _EXTRA_FIELDS.get(rt.key, ()))


def _field_value(obj: Obj, path: str) -> str | None:
    if path == "source":  # core Event: source.component
        path = "source.component"
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    if cur is None:
        return None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def compile_selectors(
    labels: tuple[Requirement, ...], fields: tuple[Requirement, ...]
) -> Callable[[Obj], bool] | None:
    """A predicate for both selectors, or None when nothing is selected (match everything)."""
    if not labels and not fields:
        return None

    def match(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        obj_labels = meta.get("labels") or {}
        for r in labels:
            if not r.matches(obj_labels.get(r.key)):
                return False
        # Field selectors compare strings; an absent field reads as "".
        return all(r.matches(_field_value(obj, r.key) or "") for r in fields)

    return match
