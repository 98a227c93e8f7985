"""The provisioner's own error tree.

Adapters translate third-party exceptions (cinderclient, keystoneauth1, kubernetes) into these, so the core
never sees a library's exception and the libraries can be swapped. Each error says whether retrying can
help (``final``) and carries what a human needs to act: the field, the Cinder operation and request id.
"""

from __future__ import annotations


class ProvisionerError(Exception):
    """Root of every error the provisioner raises on purpose."""

    #: True when retrying without a change to the claim, class or cloud cannot succeed.
    final: bool = False


class ConfigError(ProvisionerError):
    """A setting is missing, malformed or contradicts another; ``field`` names it."""

    final = True

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidInput(ProvisionerError):
    """Bad user input (class parameters, claim, connection info); ``field`` names the offending field."""

    final = True

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnsupportedConnectionType(InvalidInput):
    """Cinder exported the volume with a ``driver_volume_type`` we cannot map."""


# --- Cinder -------------------------------------------------------------------------------------------


class CinderError(ProvisionerError):
    """A Cinder call failed. ``operation`` is our name for the call, ``request_id`` Cinder's."""

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.status_code = status_code
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.message]
        if self.operation:
            parts.append(f"operation={self.operation}")
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class CinderNotFound(CinderError):
    """404: the volume, snapshot or attachment does not exist."""


class CinderReferenceNotFound(CinderNotFound):
    """A create named something Cinder does not have: ``reference`` says which request field.

    Final: retrying the same request cannot help until an admin creates it or the user fixes the class or
    claim, so it is retried slowly, never hot. ``reference`` is one of ``volume_type``,
    ``availability_zone``, ``snapshot_id``, ``source_volid``.
    """

    final = True

    def __init__(self, message: str, *, reference: str, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.reference = reference


class CinderBadResponse(CinderError):
    """Cinder answered something we cannot read (a field missing or of the wrong type)."""


class CinderConflict(CinderError):
    """409 or 'invalid state' 400: the resource is busy or in the wrong status."""


class CinderQuotaExceeded(CinderError):
    """413: over quota. Final until the quota changes."""

    final = True


class CinderRateLimited(CinderError):
    """429: slow down; ``retry_after`` seconds from the Retry-After header."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class CinderUnavailable(CinderError):
    """5xx, connection refused or timed out: transient."""


class CinderBadRequest(CinderError):
    """400 that is not a state conflict: our request was wrong for this cloud (final)."""

    final = True


class CinderAmbiguous(CinderError):
    """Two or more volumes carry one name and cluster tag: never pick one silently."""

    final = True


class CinderAuthError(CinderError):
    """401/403 or Keystone refused the credentials."""

    final = True


# --- Kubernetes ---------------------------------------------------------------------------------------


class KubeError(ProvisionerError):
    """A Kubernetes API call failed."""

    def __init__(self, message: str, *, status_code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.reason = reason


class KubeNotFound(KubeError):
    """404."""


class KubeConflict(KubeError):
    """409 Conflict: stale resourceVersion or failed precondition."""


class KubeAlreadyExists(KubeConflict):
    """409 AlreadyExists on create."""


class KubeGone(KubeError):
    """410: resourceVersion too old; relist."""


class KubeInvalid(KubeError):
    """422 Invalid."""

    final = True


class KubeTooManyRequests(KubeError):
    """429 from the API server."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class KubeUnavailable(KubeError):
    """5xx or connection failure."""


# --- Leadership ---------------------------------------------------------------------------------------


class NotLeader(ProvisionerError):
    """This replica is not sure it holds the lease, so it must not mutate Cinder (fencing).

    Retryable: the key is retried with backoff and succeeds once this replica leads again (or another
    replica, which does lead, takes the work). ``operation`` names the call that was refused.
    """

    final = False

    def __init__(self, operation: str) -> None:
        super().__init__(f"not the leader: refused Cinder {operation}")
        self.operation = operation
