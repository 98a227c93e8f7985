"""Translate cinderclient / keystoneauth1 exceptions into ``provisioner.domain.errors``.

Why: the core decides what to do from *our* error classes (retry, requeue, give up, tell the user); no
third-party exception may cross the adapter boundary. Cinder's request id (``x-openstack-request-id``) is
kept on every error, because it is what a Cinder admin needs to find the failure in their logs.
cinderclient reads ``x-compute-request-id`` (a Nova header), so the id is taken from the response here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from cinderclient import exceptions as cinder_exc
from keystoneauth1 import exceptions as ks_exc

from provisioner.domain.errors import (
    CinderAuthError,
    CinderBadRequest,
    CinderConflict,
    CinderError,
    CinderNotFound,
    CinderQuotaExceeded,
    CinderRateLimited,
    CinderUnavailable,
)

#: 400s that mean "wrong state right now" (retry later), not "wrong request" (final).
_INVALID_STATE = re.compile(
    r"invalid (volume|snapshot|attachment)\b|status must be|invalid state|current status is|"
    r"is in .* state|must not be|being (created|deleted|used)|incremental backups exist",
    re.IGNORECASE,
)


def request_id_of(response: Any) -> str | None:
    """``x-openstack-request-id`` (or Nova's spelling) from a requests/keystoneauth response."""
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("x-openstack-request-id") or headers.get("x-compute-request-id")
    return str(value) if value else None


def retry_after_of(response: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent/unparsable."""
    headers = getattr(response, "headers", None)
    raw = (headers.get("Retry-After") or headers.get("retry-after")) if headers else None
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(str(raw)).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def from_status(
    status: int, message: str, *, operation: str, request_id: str | None, retry_after: float | None
) -> CinderError:
    """Our error for an HTTP status code from Cinder."""
    kw: dict[str, Any] = {"operation": operation, "status_code": status, "request_id": request_id}
    if status == 404:
        return CinderNotFound(message, **kw)
    if status == 409 or (status == 400 and _INVALID_STATE.search(message)):
        return CinderConflict(message, **kw)
    if status == 413:
        return CinderQuotaExceeded(message, **kw)
    if status == 429:
        return CinderRateLimited(message, retry_after=retry_after, **kw)
    if status in (401, 403):
        return CinderAuthError(message, **kw)
    if status >= 500:
        return CinderUnavailable(message, **kw)
    return CinderBadRequest(message, **kw)


def translate(
    exc: BaseException, operation: str, *, last_headers: Mapping[str, str] | None = None
) -> CinderError:
    """Map any exception raised while talking to Cinder/Keystone to one of ours (never re-raises it).

    ``last_headers`` are the headers of the failed HTTP response when the library dropped it
    (request id, Retry-After).
    """
    err = _translate(exc, operation)
    if last_headers and err.status_code is not None:
        if err.request_id is None:
            err.request_id = last_headers.get("x-openstack-request-id") or last_headers.get(
                "x-compute-request-id"
            )
        if isinstance(err, CinderRateLimited) and err.retry_after is None:
            err.retry_after = retry_after_of(_Headers(last_headers))
    return err


class _Headers:
    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers


def _translate(exc: BaseException, operation: str) -> CinderError:
    if isinstance(exc, CinderError):
        return exc
    if isinstance(exc, cinder_exc.ClientException):
        response = getattr(exc, "response", None)
        message = str(exc.message or "") or type(exc).__name__
        return from_status(
            int(exc.code),
            message,
            operation=operation,
            request_id=request_id_of(response) or getattr(exc, "request_id", None),
            retry_after=retry_after_of(response),
        )
    if isinstance(exc, ks_exc.HttpError):
        status = int(exc.http_status or 500)
        response = getattr(exc, "response", None)
        if status < 500 and str(getattr(exc, "url", "") or "").rstrip("/").endswith("/auth/tokens"):
            # Keystone refused the login itself: a revoked or expired token answers 404 here (found
            # against real Keystone), which must not read as a Cinder resource that is missing.
            return CinderAuthError(
                f"keystone refused the credentials: {exc.message or type(exc).__name__}",
                operation=operation,
                status_code=status,
                request_id=getattr(exc, "request_id", None) or request_id_of(response),
            )
        where = "keystone" if status in (401, 403) else "cinder"
        return from_status(
            status,
            f"{where}: {exc.message or type(exc).__name__}",
            operation=operation,
            request_id=getattr(exc, "request_id", None) or request_id_of(response),
            retry_after=retry_after_of(response),
        )
    if isinstance(exc, ks_exc.ConnectionError | ks_exc.DiscoveryFailure):
        # ConnectFailure, ConnectTimeout, SSLError, unreachable Keystone: transient from our side.
        return CinderUnavailable(f"cannot reach the cloud: {type(exc).__name__}", operation=operation)
    if isinstance(exc, ks_exc.EndpointNotFound | ks_exc.EmptyCatalog):
        return CinderBadRequest(
            "no Block Storage endpoint in the service catalog (check region_name / interface)",
            operation=operation,
        )
    if isinstance(exc, ks_exc.MissingRequiredOptions | ks_exc.AuthPluginException):
        return CinderAuthError(f"cannot authenticate: {type(exc).__name__}", operation=operation)
    if isinstance(exc, cinder_exc.UnsupportedVersion):
        return CinderBadRequest(f"unsupported API version: {exc}", operation=operation)
    if isinstance(exc, ks_exc.ClientException):
        return CinderUnavailable(f"keystoneauth: {type(exc).__name__}", operation=operation)
    return CinderError(f"unexpected {type(exc).__name__} talking to Cinder", operation=operation)
