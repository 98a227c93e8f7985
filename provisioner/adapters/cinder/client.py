"""The Cinder adapter: ``provisioner.ports.CinderPort`` over python-cinderclient v3 and keystoneauth1.

Why it looks like this:

* **Our errors only.** Every call goes through ``_call``, which translates any library exception into
  ``provisioner.domain.errors`` (``cinder_errors.translate``) with the operation name and Cinder's request id.
* **Retries only where harmless.** tenacity retries *idempotent* calls (get, list, find, delete with
  404 = success, unreserve, complete, terminate …) on ``CinderUnavailable`` / ``CinderRateLimited``
  (honouring Retry-After), a bounded number of times. ``create_volume`` / ``create_snapshot`` /
  ``create_attachment`` / ``reserve`` / ``extend`` are never retried here: a lost response could mean the
  thing exists, and only the controller's lookup-before-create can tell. Everything else is requeueing.
* **Bounded pressure.** A ``BoundedSemaphore`` caps in-flight Cinder calls across all worker threads.
* **Negotiated features.** The microversion is negotiated once (lazily, or eagerly via ``connect()``):
  the highest the server, cinderclient and the configured cap allow; ``capabilities`` gates features.
* **Metrics without coupling.** ``observer(operation, status, seconds)`` is called once per attempt
  with the call's own time (from the send, the slot already held, to the answer); status is ``"ok"`` or
  our error class name (``"CinderUnavailable"`` …). ``slot_observer(cloud, operation, waited, held)``
  tells how long the attempt waited for its in-flight slot and how long it held it (the send, the
  answer, and whatever the caller did in the slot first): how much of the cap each operation takes.
* **No secrets in logs.** Connection info is never logged; the HTTP clients log to a disabled logger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from provisioner.adapters.cinder.backups import BackupOps, check_id
from provisioner.adapters.cinder.convert import to_attachment, to_snapshot, to_volume
from provisioner.adapters.cinder.errors import translate
from provisioner.adapters.cinder.session import (
    capabilities_for,
    forget_last_response,
    last_response_headers,
    make_client,
    make_session,
    negotiate,
    pin_endpoint,
)
from provisioner.config.auth import CloudConfig
from provisioner.domain import fence, names
from provisioner.domain.errors import (
    CinderAmbiguous,
    CinderBadRequest,
    CinderError,
    CinderNotFound,
    CinderRateLimited,
    CinderReferenceNotFound,
    CinderUnavailable,
)
from provisioner.domain.model import (
    Attachment,
    AttachmentId,
    CinderCapabilities,
    ConnectionInfo,
    Connector,
    CreateVolumeRequest,
    Snapshot,
    SnapshotId,
    Volume,
    VolumeId,
)

T = TypeVar("T")
Observer = Callable[[str, str, float], None]
#: ``(cloud, operation, waited_seconds, held_seconds)``, once per attempt that got its slot
SlotObserver = Callable[[str, str, float, float], None]
log = structlog.get_logger(__name__)


class CinderAdapter(BackupOps):
    """Thread-safe ``CinderPort`` for one cloud (backups from ``BackupOps``). Build with ``make_cinder``."""

    def __init__(
        self,
        *,
        cloud: CloudConfig,
        session: Any,
        max_in_flight: int = 16,
        observer: Observer | None = None,
        slot_observer: SlotObserver | None = None,
        retry_attempts: int = 4,
        retry_base_wait: float = 0.2,
        retry_max_wait: float = 10.0,
        page_size: int = 500,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1 or retry_attempts < 1 or page_size < 1:
            raise ValueError("max_in_flight, retry_attempts and page_size must be >= 1")
        self.cloud = cloud
        self._session = session
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._observer = observer
        self._slot_observer = slot_observer
        self._attempts = retry_attempts
        self._base_wait = retry_base_wait
        self._max_wait = retry_max_wait
        self._page_size = page_size
        self._sleep = sleep
        self._clock = clock
        self._init_lock = threading.Lock()
        self._client: Any = None
        self._caps: CinderCapabilities | None = None

    # --- set-up ---------------------------------------------------------------------------------------

    def connect(self) -> CinderCapabilities:
        """Authenticate and negotiate the microversion now (otherwise it happens on the first call)."""
        self._ensure_client()
        assert self._caps is not None
        return self._caps

    def close(self) -> None:
        """Close the pooled HTTP connections (a stopped replica must not keep its sockets open)."""
        http = getattr(self._session, "session", None)
        if http is not None:
            http.close()

    @property
    def capabilities(self) -> CinderCapabilities:
        """What the negotiated microversion allows (negotiates on first use)."""
        return self.connect()

    def _ensure_client(self) -> Any:
        if self._client is not None:
            return self._client
        with self._init_lock:
            if self._client is None:
                version = self._retrying(
                    "negotiate",
                    lambda: self._attempt("negotiate", lambda: negotiate(self._session, self.cloud)),
                )
                client = make_client(self._session, self.cloud, version)
                self._retrying("negotiate", lambda: self._attempt("negotiate", lambda: pin_endpoint(client)))
                self._caps = capabilities_for(version)
                self._client = client
                log.info("cinder_connected", cloud=self.cloud.name, microversion=version)
        return self._client

    # --- the one way to call Cinder -------------------------------------------------------------------

    def _observe(self, operation: str, status: str, started: float) -> None:
        if self._observer is not None:
            self._observer(operation, status, self._clock() - started)

    def _attempt(
        self,
        operation: str,
        fn: Callable[[], T],
        *,
        missing_ok: bool = False,
        before_send: Callable[[], None] | None = None,
    ) -> T:
        asked = self._clock()
        self._slots.acquire()
        held = self._clock()
        try:
            fence.check_before_send()  # the slot may have taken seconds: does this replica still lead?
            if before_send is not None:  # the caller's last step before sending (its errors are its own)
                before_send()
            forget_last_response()
            sent = self._clock()
            try:
                result = fn()
            except Exception as e:
                err = translate(e, operation, last_headers=last_response_headers())
                if missing_ok and isinstance(err, CinderNotFound):
                    self._observe(operation, "ok", sent)
                    return cast(T, None)
                self._observe(operation, type(err).__name__, sent)
                log.debug(
                    "cinder_call_failed",
                    operation=operation,
                    error=type(err).__name__,
                    status_code=err.status_code,
                    request_id=err.request_id,
                )
                raise err from e
            self._observe(operation, "ok", sent)
            return result
        finally:
            released = self._clock()
            self._slots.release()
            if self._slot_observer is not None:
                self._slot_observer(self.cloud.name, operation, held - asked, released - held)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, CinderRateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, self._max_wait)
        return float(min(self._base_wait * 2 ** (state.attempt_number - 1), self._max_wait))

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "cinder_call_retrying",
            operation=getattr(exc, "operation", ""),
            error=type(exc).__name__,
            status_code=getattr(exc, "status_code", None),
            request_id=getattr(exc, "request_id", None),
            attempt=state.attempt_number,
            wait_seconds=round(state.upcoming_sleep, 3),
        )

    def _retrying(self, operation: str, fn: Callable[[], T]) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception_type((CinderUnavailable, CinderRateLimited)),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return retrying(fn)

    def _call(
        self,
        operation: str,
        fn: Callable[[Any], T],
        *,
        idempotent: bool,
        before_send: Callable[[], None] | None = None,
    ) -> T:
        """Run ``fn(client)`` with the cap, translation, metrics and (if idempotent) retries;
        ``before_send`` (never with retries) runs once the slot is held, before ``fn``."""
        if before_send is not None and idempotent:
            raise ValueError("before_send is for calls that are sent once")

        def once() -> T:
            client = self._ensure_client()
            return self._attempt(operation, lambda: fn(client), before_send=before_send)

        return self._retrying(operation, once) if idempotent else once()

    def _call_missing_ok(self, operation: str, fn: Callable[[Any], object]) -> None:
        """Idempotent call where 404 means the goal is already reached."""

        def once() -> None:
            client = self._ensure_client()
            self._attempt(operation, lambda: fn(client), missing_ok=True)

        self._retrying(operation, once)

    def _need_attachments(self, operation: str) -> None:
        if not self.capabilities.attachments:
            raise CinderBadRequest(
                f"the attachments API needs microversion 3.44; negotiated {self.capabilities.microversion}",
                operation=operation,
            )

    # --- volumes -------------------------------------------------------------------------------------

    def create_volume(
        self, request: CreateVolumeRequest, *, before_send: Callable[[], None] | None = None
    ) -> Volume:
        """Create (not retried: the caller looks up by name + cluster tag before creating again).

        ``before_send`` runs once this call holds its in-flight slot (and the fence passed), right before
        the request is sent: the provision flow writes its create mark there, so the mark's time is the
        send time however long the slot took. If it raises, nothing is sent.

        A 404 (or an availability-zone 400) names what the request referred to that Cinder lacks:
        CinderReferenceNotFound says which request field, so the flow can name the user's field.
        """
        sources = (
            ("snapshot_id", request.snapshot_id),
            ("source_volid", request.source_volid),
            ("backup_id", request.backup_id),
        )
        for what, value in sources:
            if value is not None:
                _check_id(what, value, "create_volume")
        if request.backup_id is not None and not self.capabilities.backups_as_source:
            raise CinderBadRequest(
                "creating a volume from a backup needs microversion 3.47; negotiated "
                f"{self.capabilities.microversion} (restore into a volume instead)",
                operation="create_volume",
            )
        try:
            resource = self._create_volume(request, before_send)
        except (CinderNotFound, CinderBadRequest) as e:
            reference = _missing_reference(e, request)
            if reference is None:
                raise
            raise CinderReferenceNotFound(
                e.message,
                reference=reference,
                operation=e.operation,
                status_code=e.status_code,
                request_id=e.request_id,
            ) from e
        volume = to_volume(resource)
        log.info("cinder_volume_created", volume_id=volume.id, volume=volume.name, size_gib=volume.size_gib)
        return volume

    def _create_volume(self, request: CreateVolumeRequest, before_send: Callable[[], None] | None) -> Any:
        return self._call(
            "create_volume",
            lambda c: c.volumes.create(
                request.size_gib,
                name=request.name,
                description=request.description,
                volume_type=request.volume_type,
                availability_zone=request.availability_zone,
                snapshot_id=request.snapshot_id,
                source_volid=request.source_volid,
                metadata=dict(request.metadata),
                **({"backup_id": request.backup_id} if request.backup_id else {}),
            ),
            idempotent=False,
            before_send=before_send,
        )

    def get_volume(self, volume_id: VolumeId) -> Volume:
        """The volume; CinderNotFound when it does not exist."""
        _check_id("volume_id", volume_id, "get_volume")
        return to_volume(self._call("get_volume", lambda c: c.volumes.get(volume_id), idempotent=True))

    def find_volume(self, *, name: str, cluster: str) -> Volume | None:
        """The one volume called ``name`` carrying our cluster tag; two → CinderAmbiguous."""
        opts = {"name": name, "metadata": {names.META_CLUSTER: cluster}}
        found = self._call("find_volume", lambda c: c.volumes.list(search_opts=opts), idempotent=True)
        matches = [
            v
            for v in map(to_volume, found)
            if v.name == name and v.metadata.get(names.META_CLUSTER) == cluster and v.status != "deleting"
        ]
        if len(matches) > 1:
            ids = ", ".join(sorted(v.id for v in matches))
            raise CinderAmbiguous(
                f"{len(matches)} volumes named {name} carry cluster tag {cluster}: {ids}",
                operation="find_volume",
            )
        return matches[0] if matches else None

    def list_volumes(
        self, *, metadata: Mapping[str, str], created_since: float | None = None
    ) -> Iterator[Volume]:
        """Every volume whose metadata contains ``metadata``, page by page (marker/limit); with
        ``created_since`` only those Cinder created at or after that Unix time (whole seconds, 3.60+)."""
        opts: dict[str, Any] = {"metadata": dict(metadata)} if metadata else {}
        if created_since is not None:
            if not self.capabilities.time_filters:
                version = self.capabilities.microversion
                raise ValueError(f"created_since needs microversion 3.60 (negotiated {version})")
            opts["created_at"] = "gte:" + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(created_since)))
        marker: str | None = None
        while True:

            def fetch(c: Any, m: str | None = marker) -> list[Any]:
                return list(c.volumes.list(search_opts=opts, marker=m, limit=self._page_size))

            page = self._call("list_volumes", fetch, idempotent=True)
            for item in page:
                yield to_volume(item)
            if len(page) < self._page_size:
                return
            marker = str(page[-1].id)

    def delete_volume(self, volume_id: VolumeId, *, cascade: bool = False) -> None:
        """Start deletion; a missing volume counts as deleted."""
        _check_id("volume_id", volume_id, "delete_volume")
        self._call_missing_ok("delete_volume", lambda c: c.volumes.delete(volume_id, cascade=cascade))

    def extend_volume(self, volume_id: VolumeId, new_size_gib: int) -> None:
        """Grow to ``new_size_gib`` (in-use volumes need ``capabilities.inuse_extend``)."""
        _check_id("volume_id", volume_id, "extend_volume")
        self._call("extend_volume", lambda c: c.volumes.extend(volume_id, new_size_gib), idempotent=False)

    def set_volume_metadata(self, volume_id: VolumeId, metadata: Mapping[str, str]) -> None:
        """POST /volumes/{id}/metadata: merge ``metadata`` into the volume's (a merge: retried safely)."""
        _check_id("volume_id", volume_id, "set_volume_metadata")
        self._call(
            "set_volume_metadata",
            lambda c: c.volumes.set_metadata(volume_id, dict(metadata)),
            idempotent=True,
        )

    # --- v3 attachments --------------------------------------------------------------------------------

    def create_attachment(self, volume_id: VolumeId, connector: Connector) -> Attachment:
        """Create an attachment with our connector: Cinder exports the volume and returns connection info."""
        _check_id("volume_id", volume_id, "create_attachment")
        self._need_attachments("create_attachment")
        raw = self._call(
            "create_attachment",
            lambda c: c.attachments.create(volume_id, connector.to_wire(), mode="rw"),
            idempotent=False,
        )
        return to_attachment(raw, operation="create_attachment")

    def complete_attachment(self, attachment_id: AttachmentId) -> None:
        """Mark the attachment complete (volume → in-use)."""
        _check_id("attachment_id", attachment_id, "complete_attachment")
        self._need_attachments("complete_attachment")
        self._call("complete_attachment", lambda c: c.attachments.complete(attachment_id), idempotent=True)

    def delete_attachment(self, attachment_id: AttachmentId) -> None:
        """Remove the attachment (Cinder unexports); a missing one counts as deleted."""
        _check_id("attachment_id", attachment_id, "delete_attachment")
        self._need_attachments("delete_attachment")
        self._call_missing_ok("delete_attachment", lambda c: c.attachments.delete(attachment_id))

    # --- legacy export ---------------------------------------------------------------------------------

    def reserve(self, volume_id: VolumeId) -> None:
        """os-reserve (available → attaching)."""
        _check_id("volume_id", volume_id, "reserve")
        self._call("reserve", lambda c: c.volumes.reserve(volume_id), idempotent=False)

    def initialize_connection(self, volume_id: VolumeId, connector: Connector) -> ConnectionInfo:
        """os-initialize_connection: export to our connector."""
        _check_id("volume_id", volume_id, "initialize_connection")
        raw = self._call(
            "initialize_connection",
            lambda c: c.volumes.initialize_connection(volume_id, connector.to_wire()),
            idempotent=False,
        )
        try:
            return ConnectionInfo.from_wire(dict(raw))
        except Exception as e:  # malformed reply: ours, without echoing the data (it may hold secrets)
            raise CinderError("malformed connection_info", operation="initialize_connection") from e

    def terminate_connection(self, volume_id: VolumeId, connector: Connector) -> None:
        """os-terminate_connection (idempotent on every driver we know)."""
        _check_id("volume_id", volume_id, "terminate_connection")
        self._call(
            "terminate_connection",
            lambda c: c.volumes.terminate_connection(volume_id, connector.to_wire()),
            idempotent=True,
        )

    def unreserve(self, volume_id: VolumeId) -> None:
        """os-unreserve (attaching → available)."""
        _check_id("volume_id", volume_id, "unreserve")
        self._call("unreserve", lambda c: c.volumes.unreserve(volume_id), idempotent=True)

    # --- snapshots -------------------------------------------------------------------------------------

    def create_snapshot(
        self, volume_id: VolumeId, *, name: str, metadata: Mapping[str, str], force: bool = False
    ) -> Snapshot:
        """Create a snapshot (not retried)."""
        # From 3.66 Cinder snapshots in-use volumes without ``force`` and cinderclient refuses force=False.
        force_arg: bool | None = (True if force else None) if _at_least(self.capabilities, 66) else force
        resource = self._call(
            "create_snapshot",
            lambda c: c.volume_snapshots.create(
                volume_id, force=force_arg, name=name, metadata=dict(metadata)
            ),
            idempotent=False,
        )
        return to_snapshot(resource)

    def get_snapshot(self, snapshot_id: SnapshotId) -> Snapshot:
        """The snapshot; CinderNotFound when it does not exist."""
        _check_id("snapshot_id", snapshot_id, "get_snapshot")
        return to_snapshot(
            self._call("get_snapshot", lambda c: c.volume_snapshots.get(snapshot_id), idempotent=True)
        )

    def list_snapshots(
        self, *, metadata: Mapping[str, str] | None = None, volume_id: VolumeId | None = None
    ) -> Iterator[Snapshot]:
        """Snapshots filtered by metadata and/or volume, page by page."""
        opts: dict[str, Any] = {}
        if metadata:
            opts["metadata"] = dict(metadata)
        if volume_id:
            opts["volume_id"] = volume_id
        marker: str | None = None
        while True:

            def fetch(c: Any, m: str | None = marker) -> list[Any]:
                return list(c.volume_snapshots.list(search_opts=opts, marker=m, limit=self._page_size))

            page = self._call("list_snapshots", fetch, idempotent=True)
            for item in page:
                yield to_snapshot(item)
            if len(page) < self._page_size:
                return
            marker = str(page[-1].id)

    def delete_snapshot(self, snapshot_id: SnapshotId) -> None:
        """Start deletion; a missing snapshot counts as deleted."""
        _check_id("snapshot_id", snapshot_id, "delete_snapshot")
        self._call_missing_ok("delete_snapshot", lambda c: c.volume_snapshots.delete(snapshot_id))


def _at_least(caps: CinderCapabilities, minor: int) -> bool:
    major, _, minor_text = caps.microversion.partition(".")
    return major == "3" and int(minor_text or 0) >= minor


def make_cinder(
    cloud: CloudConfig,
    *,
    max_in_flight: int = 16,
    observer: Observer | None = None,
    slot_observer: SlotObserver | None = None,
    **tuning: Any,
) -> CinderAdapter:
    """The adapter for one configured cloud (no network I/O until the first call or ``connect()``).

    ``tuning``: retry_attempts, retry_base_wait, retry_max_wait, page_size, sleep, clock.
    """
    try:
        session = make_session(cloud, pool_size=max_in_flight)
    except Exception as e:  # keystoneauth option errors: should have been caught by config validation
        raise translate(e, "make_session") from e
    return CinderAdapter(
        cloud=cloud,
        session=session,
        max_in_flight=max_in_flight,
        observer=observer,
        slot_observer=slot_observer,
        **tuning,
    )


_check_id = check_id


def _missing_reference(err: CinderError, request: CreateVolumeRequest) -> str | None:
    """Which request field a create's 404 / 400 is about (Cinder says so only in its message)."""
    text = err.message.lower()
    if isinstance(err, CinderNotFound):
        if request.volume_type and "type" in text:
            return "volume_type"
        if request.snapshot_id and "snapshot" in text:
            return "snapshot_id"
        if request.backup_id and "backup" in text:
            return "backup_id"
        if request.source_volid and "volume" in text:
            return "source_volid"
        if request.volume_type:
            return "volume_type"
        return None
    if request.availability_zone and "availability zone" in text:
        return "availability_zone"
    return None
