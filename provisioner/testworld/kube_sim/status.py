"""API errors as the real API server reports them: ``Status`` objects with reason, code and details.

Clients (and our adapter's error translation) branch on ``reason`` and ``code``, so every failure the
simulator produces goes through :class:`ApiError`, whose body matches what kube-apiserver sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from provisioner.testworld.kube_sim.resources import ResourceType

CONFLICT_MESSAGE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


class ApiError(Exception):
    """A request failed; ``status_body()`` is the JSON the server answers with."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def status_body(self) -> dict[str, Any]:
        """The ``Status`` object for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details = dict(self.details or {})
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


def _details(rt: ResourceType, name: str, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "kind": rt.plural, **extra}
    if rt.group:
        d["group"] = rt.group
    return d


def not_found(rt: ResourceType, name: str) -> ApiError:
    """404 NotFound for ``rt``/``name``."""
    return ApiError(404, "NotFound", f'{rt.plural} "{name}" not found', details=_details(rt, name))


def namespace_not_found(namespace: str) -> ApiError:
    """404 for a namespace that does not exist."""
    return ApiError(
        404,
        "NotFound",
        f'namespaces "{namespace}" not found',
        details={"name": namespace, "kind": "namespaces"},
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    """409 AlreadyExists."""
    return ApiError(409, "AlreadyExists", f'{rt.plural} "{name}" already exists', details=_details(rt, name))


def conflict(rt: ResourceType, name: str, why: str = CONFLICT_MESSAGE) -> ApiError:
    """409 Conflict (stale resourceVersion, failed precondition)."""
    what = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {what} "{name}": {why}',
        details=_details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid; ``causes`` are (field, message) pairs."""
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    details: dict[str, Any] = {
        "name": name,
        "kind": rt.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
    }
    if rt.group:
        details["group"] = rt.group
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {text}', details=details)


def forbidden(rt: ResourceType, name: str, why: str) -> ApiError:
    """403 Forbidden (an admission plugin refused the request)."""
    return ApiError(403, "Forbidden", f'{rt.plural} "{name}" is forbidden: {why}', details=_details(rt, name))


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message)


def unsupported_media_type(accepted: Sequence[str]) -> ApiError:
    """415 as apimachinery's ``negotiation.NewUnsupportedMediaTypeError(accepted)`` reports it."""
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def not_acceptable(accepted: Sequence[str]) -> ApiError:
    """406 as ``negotiation.NewNotAcceptableError(accepted)`` reports it."""
    return ApiError(
        406, "NotAcceptable", "only the following media types are accepted: " + ", ".join(accepted)
    )


def gone(message: str) -> ApiError:
    """410 Expired: a resourceVersion or continue token older than the retained history."""
    return ApiError(410, "Expired", message)


def too_old(requested: int, oldest: int) -> ApiError:
    """The 410 a watch from an expired resourceVersion gets."""
    return gone(f"too old resource version: {requested} ({oldest})")


def method_not_allowed(method: str) -> ApiError:
    """405 for verbs a path does not support."""
    return ApiError(
        405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})"
    )


_REASON_BY_CODE = {
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected fault"),
    502: ("InternalError", "Bad gateway (injected fault)"),
    503: ("ServiceUnavailable", "The server is currently unable to handle the request (injected fault)"),
    504: ("Timeout", "The server was unable to return a response in the time allotted (injected fault)"),
}


def injected(code: int, retry_after: int | None = None) -> ApiError:
    """The error an injected fault answers with."""
    reason, message = _REASON_BY_CODE.get(code, ("InternalError", f"injected fault {code}"))
    return ApiError(code, reason, message, retry_after=retry_after)


def success_status(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """``Status`` Success returned by DELETE for kinds that do not return the deleted object."""
    meta = obj.get("metadata", {})
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": _details(rt, meta.get("name", ""), uid=meta.get("uid", "")),
    }
