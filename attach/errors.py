"""The node agent's errors, a branch of the provisioner's error tree.

Each error says whether retrying can help (``final``) and which gRPC status code the CSI servicer answers
with (``grpc_code``, a ``grpc.StatusCode`` member *name*, so this module stays free of grpc). Messages never
contain secrets: commands appear with their argv already redacted by the runner.
"""

from __future__ import annotations

from provisioner.domain.errors import ProvisionerError


class AttachError(ProvisionerError):
    """Root of every error the node agent raises on purpose."""

    grpc_code: str = "INTERNAL"


class InvalidRequest(AttachError):
    """A request field is missing or malformed (volume id, paths, capability)."""

    final = True
    grpc_code = "INVALID_ARGUMENT"


class VolumeBusy(AttachError):
    """Another operation on the same volume is in progress (CSI: ABORTED, the CO retries later)."""

    grpc_code = "ABORTED"


class NotFound(AttachError):
    """The volume, image, path or staging record does not exist."""

    grpc_code = "NOT_FOUND"


class FinalAttachError(AttachError):
    """Retrying cannot help until something changes (auth, wrong LUN, refusing to format)."""

    final = True
    grpc_code = "FAILED_PRECONDITION"


class AuthFailed(FinalAttachError):
    """cephx or CHAP credentials were refused."""

    grpc_code = "PERMISSION_DENIED"


class WrongDevice(FinalAttachError):
    """The device found does not carry the expected identity (WWID, major:minor)."""


class RetryableAttachError(AttachError):
    """Transient: the CO's retry may succeed (monitors away, transport error, LUN not yet visible)."""

    grpc_code = "UNAVAILABLE"


class DeviceInFlight(RetryableAttachError):
    """A previous map of this image is stuck in the kernel (D state); new maps are refused until it ends."""


class DeviceBusy(RetryableAttachError):
    """The device still has holders or the kernel says EBUSY on unmap."""

    grpc_code = "FAILED_PRECONDITION"


class CommandFailed(AttachError):
    """A host tool exited non-zero. ``argv`` is redacted; ``returncode`` is the tool's exit code."""

    def __init__(self, argv: tuple[str, ...], returncode: int, stderr: str) -> None:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        super().__init__(f"{argv[0]} exited {returncode}: {tail}".rstrip(": "))
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class CommandTimeout(AttachError):
    """A host tool did not finish in time and was killed."""

    grpc_code = "DEADLINE_EXCEEDED"

    def __init__(self, argv: tuple[str, ...], timeout: float) -> None:
        super().__init__(f"{argv[0]} did not finish within {timeout:g}s and was killed")
        self.argv = argv
        self.timeout = timeout
