"""The Cinder adapter's backup operations (``/backups``, ``/backups/{id}/restore``, ``/os-services``).

Why a module of its own: backups are a capability of their own (a separate Cinder service, cinder-backup,
that a cloud may not run), with their own rules: an incremental backup needs an earlier ``available``
backup of the volume, a backup with incremental dependants cannot be deleted, and a restore writes over a
whole volume (and, in real Cinder, replaces the volume's metadata with the source volume's, so callers
re-tag after a restore). ``CinderAdapter`` mixes these in; the same ``_call`` gives them our errors,
metrics, the in-flight cap and retries for the idempotent ones (get, list, delete with 404 = success,
the service check). Create and restore are never retried here: a lost answer may mean it happened.

The backup service check: ``GET /os-services?binary=cinder-backup`` (admin-only by Cinder's default
policy). Present = at least one service ``enabled`` and ``up``. A cloud that forbids the call (403) cannot
tell us, so the answer is then True and a create reports the truth (Cinder answers "Service cinder-backup
could not be found" when none runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from provisioner.adapters.cinder.convert import to_backup, to_restore
from provisioner.domain import names
from provisioner.domain.errors import CinderAuthError, CinderBadRequest, CinderNotFound
from provisioner.domain.model import Backup, BackupId, BackupRestore, CinderCapabilities, VolumeId

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: Backup metadata exists from this microversion on (create with metadata, metadata in the answer).
BACKUP_METADATA_MINOR = 43


class BackupOps:
    """Backup methods of ``CinderPort``; needs the adapter's ``_call`` / ``_call_missing_ok``."""

    if TYPE_CHECKING:  # provided by CinderAdapter

        @property
        def capabilities(self) -> CinderCapabilities: ...

        _page_size: int

        def _call(self, operation: str, fn: Callable[[Any], T], *, idempotent: bool) -> T: ...

        def _call_missing_ok(self, operation: str, fn: Callable[[Any], object]) -> None: ...

    def has_backup_service(self) -> bool:
        """Whether a cinder-backup service is enabled and up (403 → True: the cloud will not say)."""
        try:
            services = self._call(
                "list_services",
                lambda c: list(c.services.list(binary="cinder-backup")),
                idempotent=True,
            )
        except CinderAuthError:
            log.info("cinder_backup_service_unknown", reason="os-services forbidden")
            return True
        except CinderNotFound:  # a cloud without the os-services extension
            return True
        return any(
            str(getattr(s, "status", "")) == "enabled" and str(getattr(s, "state", "")) == "up"
            for s in services
        )

    def create_backup(
        self,
        volume_id: VolumeId,
        *,
        name: str,
        metadata: Mapping[str, str],
        incremental: bool = False,
        force: bool = False,
    ) -> Backup:
        """POST /backups (not retried). Metadata needs 3.43; without it the backup carries none."""
        check_id("volume_id", volume_id, "create_backup")
        kwargs: dict[str, Any] = {"name": name, "incremental": incremental, "force": force}
        if metadata and backup_metadata(self.capabilities):
            kwargs["metadata"] = dict(metadata)
        resource = self._call(
            "create_backup", lambda c: c.backups.create(volume_id, **kwargs), idempotent=False
        )
        backup = to_backup(resource)
        log.info("cinder_backup_created", backup_id=backup.id, volume_id=volume_id, incremental=incremental)
        return backup

    def get_backup(self, backup_id: BackupId) -> Backup:
        """GET /backups/{id}; CinderNotFound when it does not exist."""
        check_id("backup_id", backup_id, "get_backup")
        return to_backup(self._call("get_backup", lambda c: c.backups.get(backup_id), idempotent=True))

    def list_backups(
        self, *, metadata: Mapping[str, str] | None = None, volume_id: VolumeId | None = None
    ) -> Iterator[Backup]:
        """GET /backups/detail filtered by volume (server side) and metadata (here), page by page."""
        opts: dict[str, Any] = {}
        if volume_id:
            check_id("volume_id", volume_id, "list_backups")
            opts["volume_id"] = volume_id
        # No server-side metadata filter: real Cinder (29, contract suite) answers a backup list filtered by
        # metadata with nothing at all, even for an exact match. The filter is applied here instead.
        marker: str | None = None
        while True:

            def fetch(c: Any, m: str | None = marker) -> list[Any]:
                return list(c.backups.list(search_opts=opts, marker=m, limit=self._page_size))

            page = self._call("list_backups", fetch, idempotent=True)
            for item in page:
                backup = to_backup(item)
                if all(backup.metadata.get(k) == v for k, v in (metadata or {}).items()):
                    yield backup
            if len(page) < self._page_size:
                return
            marker = str(page[-1].id)

    def delete_backup(self, backup_id: BackupId) -> None:
        """DELETE /backups/{id}; a missing backup counts as deleted (dependants → CinderConflict)."""
        check_id("backup_id", backup_id, "delete_backup")
        self._call_missing_ok("delete_backup", lambda c: c.backups.delete(backup_id))

    def restore_backup(
        self, backup_id: BackupId, *, volume_id: VolumeId | None = None, name: str | None = None
    ) -> BackupRestore:
        """POST /backups/{id}/restore into ``volume_id`` or a new volume ``name`` (not retried)."""
        check_id("backup_id", backup_id, "restore_backup")
        if volume_id is not None:
            check_id("volume_id", volume_id, "restore_backup")
        raw = self._call(
            "restore_backup",
            lambda c: c.restores.restore(backup_id, volume_id=volume_id, name=name),
            idempotent=False,
        )
        restore = to_restore(raw)
        log.info("cinder_backup_restoring", backup_id=backup_id, volume_id=restore.volume_id)
        return restore


def backup_metadata(caps: CinderCapabilities) -> bool:
    """Whether the negotiated microversion carries backup metadata (3.43+)."""
    major, _, minor = caps.microversion.partition(".")
    return major == "3" and int(minor or 0) >= BACKUP_METADATA_MINOR


def check_id(what: str, value: object, operation: str) -> None:
    """Refuse an id that could address another resource (``../volumes/x``) before it reaches a URL."""
    if not names.is_cinder_id(value):
        raise CinderBadRequest(f"{what} {str(value)[:80]!r} is not a Cinder id", operation=operation)
