"""List/watch query options, validated like kube-apiserver's ``ValidateListOptions``.

Go clients from client-go 1.35 start informers with a *streaming list* (KEP-3157 "WatchList"): one watch
with ``sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true`` that must
deliver the current state as ADDED events and then a BOOKMARK annotated ``k8s.io/initial-events-end``;
until that bookmark arrives the informer never reports synced. The option combinations the real server
refuses are refused here with the same ``422 Invalid`` Status (kind ``ListOptions``, group
``meta.k8s.io``), so a client that gets them wrong fails here as it would against a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioner.testworld.kube_sim.status import ApiError

NOT_OLDER_THAN = "NotOlderThan"
EXACT = "Exact"


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchOptions:
    """What a watch request asked for, after validation."""

    resource_version: str | None
    send_initial_events: bool | None  # None = parameter absent (legacy semantics)
    allow_bookmarks: bool

    @property
    def initial_events(self) -> bool:
        """Whether the stream starts with the current state as ADDED events.

        Legacy watches do so for resourceVersion unset/"0"; with ``sendInitialEvents`` the parameter decides
        (``false`` with no resourceVersion starts at the most recent state, sending nothing old).
        """
        if self.send_initial_events is None:
            return self.resource_version in (None, "", "0")
        return self.send_initial_events

    @property
    def initial_events_end_bookmark(self) -> bool:
        """The end-of-initial-events BOOKMARK is sent only when bookmarks are allowed (as in the server)."""
        return bool(self.send_initial_events) and self.allow_bookmarks


def _bool(query: dict[str, str], name: str) -> bool | None:
    """A boolean query parameter, None when absent.

    Like apimachinery's ``Convert_Slice_string_To_bool``: ``0`` and ``false`` (any case) are false, every
    other value (even an empty one) is true.
    """
    if name not in query:
        return None
    value = query[name]
    return not (value == "0" or value.lower() == "false")


def _invalid(causes: list[tuple[str, str, str]]) -> ApiError:
    """422 for ListOptions, shaped like ``apierrors.NewInvalid(ListOptions.meta.k8s.io, "", errs)``.

    ``causes`` are (type, field, detail) with type ``FieldValueForbidden`` or ``FieldValueNotSupported``.
    """
    prefix = {"FieldValueForbidden": "Forbidden", "FieldValueNotSupported": "Unsupported value"}
    bodies = [f"{prefix[t]}: {detail}" for t, _, detail in causes]
    texts = [f"{f}: {body}" for (_, f, _), body in zip(causes, bodies, strict=True)]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details: dict[str, Any] = {
        "group": "meta.k8s.io",
        "kind": "ListOptions",
        "causes": [
            {"reason": t, "message": body, "field": f} for (t, f, _), body in zip(causes, bodies, strict=True)
        ],
    }
    return ApiError(422, "Invalid", f'ListOptions.meta.k8s.io "" is invalid: {joined}', details=details)


def validate_list(query: dict[str, str]) -> None:
    """A plain list: ``resourceVersionMatch`` rules, and ``sendInitialEvents`` is forbidden."""
    causes: list[tuple[str, str, str]] = []
    match = query.get("resourceVersionMatch", "")
    rv = query.get("resourceVersion", "")
    if match:
        if not rv:
            causes.append(
                (
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                )
            )
        if query.get("continue"):
            causes.append(
                (
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                )
            )
        if match not in (EXACT, NOT_OLDER_THAN):
            causes.append(
                (
                    "FieldValueNotSupported",
                    "resourceVersionMatch",
                    f'"{match}": supported values: "{EXACT}", "{NOT_OLDER_THAN}", ""',
                )
            )
        if match == EXACT and rv == "0":
            causes.append(
                (
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                )
            )
    if _bool(query, "sendInitialEvents") is not None:
        causes.append(("FieldValueForbidden", "sendInitialEvents", "sendInitialEvents is forbidden for list"))
    if causes:
        raise _invalid(causes)


def parse_watch(query: dict[str, str]) -> WatchOptions:
    """A watch: ``sendInitialEvents`` requires ``resourceVersionMatch=NotOlderThan`` and vice versa.

    ``allowWatchBookmarks`` is *not* required: without it the server streams the initial events but no
    end bookmark (client-go always sets it).
    """
    send = _bool(query, "sendInitialEvents")
    match = query.get("resourceVersionMatch", "")
    causes: list[tuple[str, str, str]] = []
    if send is not None and match != NOT_OLDER_THAN:
        causes.append(
            (
                "FieldValueForbidden",
                "resourceVersionMatch",
                f"sendInitialEvents requires setting resourceVersionMatch to {NOT_OLDER_THAN}",
            )
        )
    if match:
        if send is None:
            causes.append(
                (
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                )
            )
        if match != NOT_OLDER_THAN:
            causes.append(
                (
                    "FieldValueNotSupported",
                    "resourceVersionMatch",
                    f'"{match}": supported values: "{NOT_OLDER_THAN}"',
                )
            )
        if query.get("continue"):
            causes.append(
                (
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                )
            )
    if causes:
        raise _invalid(causes)
    return WatchOptions(
        resource_version=query.get("resourceVersion"),
        send_initial_events=send,
        allow_bookmarks=bool(_bool(query, "allowWatchBookmarks")),
    )
