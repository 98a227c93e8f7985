"""URL → resource routing and discovery answers, kept pure so the HTTP handler only moves bytes.

Namespaced and cluster-scoped paths, the all-namespaces collection (``/api/v1/persistentvolumeclaims``) and
the ``/status`` subresource are told apart here; anything else is a 404 like the real server's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioner.testworld.kube_sim import resources as res

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A parsed resource URL."""

    rt: res.ResourceType
    namespace: str | None
    name: str | None
    subresource: str


def parse_route(path: str) -> Route | Obj | None:
    """A :class:`Route`, a discovery document, or None (404)."""
    parts = [p for p in path.split("/") if p]
    if parts == ["version"]:
        return res.SERVER_VERSION
    if parts == ["api"]:
        return res.api_versions()
    if parts == ["apis"]:
        return res.api_group_list()
    if len(parts) == 2 and parts[0] == "apis":
        return res.api_group(parts[1])
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return res.api_resource_list(group, version)
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    rt = res.BY_ROUTE.get((group, version, rest[0]))
    if rt is None or len(rest) > 3 or (namespace is not None and not rt.namespaced):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else ""
    if (rt.namespaced and name is not None and namespace is None) or (
        sub and (sub != "status" or not rt.status_subresource)
    ):
        return None
    return Route(rt=rt, namespace=namespace, name=name, subresource=sub)
