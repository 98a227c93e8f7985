"""A controller's event recorder with client-go's deduplication, for events a controller repeats.

kube-controller-manager re-emits some events on every sync of an object (the PV controller's
``ProvisioningFailed`` for a claim naming a missing StorageClass, every resync period). client-go's
``EventCorrelator`` turns the repeats into one Event whose ``count`` rises and whose ``lastTimestamp``
moves, keyed by source, involved object, type, reason and message — so ``kubectl describe`` shows
``(x5 over 60s)`` and a watch on Events sees MODIFIED, not a new Event per sync. The spam filter (a token
bucket per object: burst 25, then one per 5 minutes) is not simulated.
"""

from __future__ import annotations

import secrets
from typing import Any

from provisioner.testworld.kube_sim.objects import now_rfc3339
from provisioner.testworld.kube_sim.resources import by_plural
from provisioner.testworld.kube_sim.status import ApiError
from provisioner.testworld.kube_sim.store import Store

Obj = dict[str, Any]
EVENT = by_plural("events")
#: (component, kind, namespace, name, uid, apiVersion, type, reason, message) — client-go's getEventKey.
Key = tuple[str, str, str, str, str, str, str, str, str]


class EventRecorder:
    """Records core/v1 Events for one component; a repeat bumps ``count`` on the Event it created."""

    def __init__(self, store: Store, component: str) -> None:
        self._store = store
        self._component = component
        self._recorded: dict[Key, tuple[str, str]] = {}  # key -> (namespace, Event name)

    def record(self, involved: Obj, kind: str, reason: str, message: str, *, event_type: str) -> None:
        """Create the Event, or bump the one already recorded for the same object/type/reason/message."""
        meta = involved["metadata"]
        api_version = involved.get("apiVersion", "v1")
        key: Key = (
            self._component,
            kind,
            meta.get("namespace", ""),
            meta["name"],
            meta["uid"],
            api_version,
            event_type,
            reason,
            message,
        )
        ts = now_rfc3339()
        existing = self._recorded.get(key)
        if existing is not None:

            def bump(event: Obj) -> Obj:
                event["count"] = int(event.get("count") or 1) + 1
                event["lastTimestamp"] = ts
                return event

            if self._store.mutate(EVENT, existing[0], existing[1], bump) is not None:
                return
            # the Event was deleted meanwhile: like client-go, create it afresh
        ns = meta.get("namespace") or "default"
        event = {
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": ns},
            "involvedObject": {
                "kind": kind,
                "namespace": meta.get("namespace", ""),
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": api_version,
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": event_type,
            "count": 1,
            "source": {"component": self._component},
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "reportingComponent": self._component,
            "reportingInstance": "",
        }
        try:
            created = self._store.create(EVENT, ns, event, manager="kube-controller-manager")
        except ApiError:
            return  # namespace gone: the recorder drops the event
        self._recorded[key] = (ns, created["metadata"]["name"])

    def forget(self, uid: str) -> None:
        """Drop what was recorded about a deleted object (its Events are no longer bumped)."""
        for key in [k for k in self._recorded if k[4] == uid]:
            del self._recorded[key]
