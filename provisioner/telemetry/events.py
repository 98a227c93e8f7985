"""Kubernetes Events for humans, deduplicated and off the worker's critical path.

``kubectl describe pvc`` is where users look first, so every failure says what failed, which Cinder call,
and Cinder's request id. But one event per retry floods it (the Go provisioners' known failure), so an
identical (object, type, reason, message) within ``window`` seconds bumps ``count`` on the existing Event
instead of creating a new one, and such bumps are written at most every ``min_patch_interval`` seconds.
Cinder's request id differs on every attempt, so it is taken out of the message (which is what is
compared) and kept in the Event's ``netvol.io/request-id`` annotation, updated with each bump.
Writes happen on a background thread: a slow API server never blocks a reconcile.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from provisioner.domain.errors import KubeAlreadyExists, KubeError
from provisioner.ports import EventWriter

log = structlog.get_logger(__name__)

EventType = Literal["Normal", "Warning"]

#: Where a request id goes: an annotation on the Event, never the (deduplicated) message.
ANN_REQUEST_ID = "netvol.io/request-id"
_REQUEST_ID = re.compile(r"\s*\(?request[_ -]id[=: ]+(req-[0-9A-Za-z-]+)\)?")
#: An Event's name is ``<object>.<16 hex>`` and must be a DNS subdomain of at most 253 characters.
_MAX_OBJECT_NAME = 253 - 17
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9.-]+")


def event_name(meta: Mapping[str, Any], type_: str, reason: str, message: str) -> str:
    """``<object>.<16 hex>`` from (object uid, type, reason, message): the same for every replica.

    So a new leader that records the same failure bumps the Event the old leader created (its create
    answers AlreadyExists) instead of starting another one: one Event per claim and reason, count rising.
    The object part is cut so the whole name is a valid Event name whatever the object is called: a
    253-character claim name still gets its Warning (the API server refuses names over 253 characters, or
    with a label ending in '-' or '.', which a plain cut can leave behind).
    """
    digest = hashlib.sha256(
        "\x00".join((str(meta.get("uid", "")), type_, reason, message)).encode()
    ).hexdigest()[:16]
    return f"{_object_part(str(meta.get('name') or 'unknown'))}.{digest}"


def _object_part(name: str) -> str:
    """``name`` cut to fit, as a DNS subdomain: every label starts and ends with [a-z0-9]."""
    cleaned = _NOT_NAME_CHARS.sub("-", name.lower())[:_MAX_OBJECT_NAME]
    labels = [label.strip("-") for label in cleaned.split(".")]
    return ".".join(label for label in labels if label)[:_MAX_OBJECT_NAME].rstrip("-.") or "object"


def split_request_id(message: str) -> tuple[str, str | None]:
    """``message`` without any ``request_id=req-…`` in it, and the (last) request id found."""
    ids = _REQUEST_ID.findall(message)
    return _REQUEST_ID.sub("", message).strip(), (ids[-1] if ids else None)


# Reasons (one place)
PROVISIONING = "Provisioning"
PROVISIONING_SUCCEEDED = "ProvisioningSucceeded"
PROVISIONING_FAILED = "ProvisioningFailed"
PROVISIONING_CLEANUP_FAILED = "ProvisioningCleanupFailed"
VOLUME_FAILED_DELETE = "VolumeFailedDelete"
VOLUME_DELETE_WAITING = "VolumeDeleteWaiting"


@dataclass(slots=True)
class _Seen:
    name: str
    namespace: str
    count: int
    first: str
    last_sent_count: int
    last_sent_at: float
    created_at: float


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Records events for PVCs and PVs; thread-safe; ``flush()`` for tests and shutdown."""

    def __init__(
        self,
        writer: EventWriter,
        *,
        component: str,
        instance: str = "",
        window: float = 600.0,
        min_patch_interval: float = 10.0,
        max_tracked: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self._component = component
        self._instance = instance
        self._window = window
        self._min_patch = min_patch_interval
        self._max = max_tracked
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str, str, str], _Seen] = OrderedDict()
        self._lock = threading.Lock()
        self._q: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="event-recorder", daemon=True)
        self._thread.start()
        self.written = 0

    def event(self, obj: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None:
        """Record an event about ``obj`` (a PVC or PV dict as the API serves it)."""
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        message, request_id = split_request_id(message)
        message = message[:1024]
        key = (uid, type_, reason, message)
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.created_at < self._window:
                seen.count += 1
                self._seen.move_to_end(key)
                if now - seen.last_sent_at < self._min_patch:
                    return
                seen.last_sent_at, seen.last_sent_count = now, seen.count
                patch: dict[str, Any] = {"count": seen.count, "lastTimestamp": _now()}
                if request_id:
                    patch["metadata"] = {"annotations": {ANN_REQUEST_ID: request_id}}
                self._q.put(("patch", seen.namespace, {"name": seen.name, "patch": patch}))
                return
            namespace = meta.get("namespace") or "default"
            name = event_name(meta, type_, reason, message)
            ts = _now()
            self._seen[key] = _Seen(name, namespace, 1, ts, 1, now, now)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind")
                or ("PersistentVolumeClaim" if meta.get("namespace") else "PersistentVolume"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": uid,
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "count": 1,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._instance or self._component,
        }
        if request_id:
            body["metadata"]["annotations"] = {ANN_REQUEST_ID: request_id}
        if not meta.get("namespace"):
            body["involvedObject"].pop("namespace")
        self._q.put(("create", namespace, body))

    def _drain(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                op, namespace, body = item
                if op == "create":
                    try:
                        self._writer.create("events", body, namespace=namespace)
                    except KubeAlreadyExists:  # another replica (an earlier leader) recorded it: bump it
                        live = self._writer.get("events", body["metadata"]["name"], namespace=namespace)
                        self._writer.patch(
                            "events",
                            body["metadata"]["name"],
                            {"count": int(live.get("count") or 1) + 1, "lastTimestamp": _now()},
                            namespace=namespace,
                            patch_type="merge",
                        )
                else:
                    self._writer.patch(
                        "events", body["name"], body["patch"], namespace=namespace, patch_type="merge"
                    )
                self.written += 1
            except KubeError as e:
                log.warning("event_write_failed", error=str(e))
            finally:
                self._q.task_done()

    def flush(self) -> None:
        """Wait until every queued event has been written (or failed)."""
        self._q.join()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        self._q.put(None)
        self._thread.join(5.0)
