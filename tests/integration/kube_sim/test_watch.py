"""Watches through kubernetes.watch.Watch: resume from RV, initial ADDED, bookmarks, timeouts, 410, drops."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from provisioner.testworld.kube_sim import KubeSimulator

Event = dict[str, Any]


def _collect(stream: Any, until: Callable[[list[Event]], bool], w: watch.Watch) -> list[Event]:
    events: list[Event] = []
    for event in stream:
        events.append(event)
        if until(events):
            w.stop()
    return events


def _names(events: list[Event]) -> list[tuple[str, str]]:
    return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events]


def test_watch_from_resource_version_sees_only_later_changes(core: client.CoreV1Api) -> None:
    """A watch from RV streams only changes after it."""
    first = core.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=first.metadata.resource_version,
        timeout_seconds=5,
    )
    assert [("ADDED", "after")] == _names(_collect(stream, lambda ev: len(ev) == 1, w))


def test_watch_from_zero_starts_with_synthetic_added(core: client.CoreV1Api) -> None:
    """RV unset replays every current object as ADDED, then streams changes."""
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_config_map, "default", timeout_seconds=5)
    events: list[Event] = []
    for event in stream:
        events.append(event)
        if len(events) == 2:
            core.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
        if len(events) == 3:
            w.stop()
    assert [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a")] == sorted(_names(events)[:2]) + _names(events)[
        2:
    ]


def test_deleted_event_carries_last_state(core: client.CoreV1Api) -> None:
    """DELETED carries the object's last state with the deletion's (newer) RV."""
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "a", "labels": {"k": "v"}}})
    core.delete_namespaced_config_map("a", "default")
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=cm.metadata.resource_version,
        timeout_seconds=5,
    )
    (event,) = _collect(stream, lambda ev: True, w)
    assert ("DELETED", {"k": "v"}) == (event["type"], event["object"].metadata.labels)
    assert int(event["object"].metadata.resource_version) > int(cm.metadata.resource_version)


def test_watch_selector_transitions(core: client.CoreV1Api) -> None:
    """Leaving a label selector is a DELETED event, re-entering it an ADDED."""
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "a", "labels": {"k": "v"}}})
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"k": "other"}}})
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"k": "v"}}})
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        label_selector="k=v",
        resource_version=cm.metadata.resource_version,
        timeout_seconds=5,
    )
    assert [("DELETED", "a"), ("ADDED", "a")] == _names(_collect(stream, lambda ev: len(ev) == 2, w))


def test_bookmarks_carry_current_resource_version(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """allowWatchBookmarks: periodic BOOKMARKs carrying only kind, apiVersion, metadata.resourceVersion."""
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        allow_watch_bookmarks=True,
        resource_version=str(sim.resource_version),
        timeout_seconds=5,
    )
    (event,) = _collect(stream, lambda ev: True, w)
    obj = event["raw_object"]
    assert ("BOOKMARK", {"resourceVersion": str(sim.resource_version)}) == (event["type"], obj["metadata"])
    assert ("ConfigMap", "v1") == (obj["kind"], obj["apiVersion"])


def test_timeout_seconds_ends_the_stream(core: client.CoreV1Api) -> None:
    """timeoutSeconds makes the server end the stream (the client's generator finishes)."""
    started = time.monotonic()
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version="1", timeout_seconds=1
        )
    )
    elapsed = time.monotonic() - started
    assert [] == [e for e in events if e["type"] != "ADDED"]
    assert 0.9 <= elapsed < 3


def test_expired_resource_version_at_start_raises_410(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """A watch from a compacted RV gets ERROR 410; the client retries once, then raises ApiException(410)."""
    old = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}}).metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    sim.faults.compact_history()
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=old))
    watches = [r for r in sim.requests if r.watch]
    assert (410, 2) == (e.value.status, len(watches))


def test_bounded_history_expires_old_versions() -> None:
    """With history_limit=2, a watch from an RV three writes back gets 410."""
    with KubeSimulator(history_limit=2, controllers=False) as sim, sim.api_client() as api:
        core = client.CoreV1Api(api)
        old = core.create_namespaced_config_map(
            "default", {"metadata": {"name": "a"}}
        ).metadata.resource_version
        for name in ("b", "c", "d"):
            core.create_namespaced_config_map("default", {"metadata": {"name": name}})
        with pytest.raises(ApiException) as e:
            list(
                watch.Watch().stream(
                    core.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=5
                )
            )
    assert 410 == e.value.status


def test_410_mid_watch(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """expire_watches sends ERROR 410 to open watches; resuming from the compacted RV fails with 410 too."""
    rv = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}}).metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    seen: list[str] = []

    def consume() -> None:
        for event in watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv):
            seen.append(event["raw_object"]["metadata"]["name"])
            if len(seen) == 1:
                sim.faults.expire_watches()

    with pytest.raises(ApiException) as e:
        consume()
    assert (410, ["b"]) == (e.value.status, seen)


def test_graceful_drop_is_resumed_by_the_client(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """A cleanly ended stream is re-watched by the client from its last RV without losing events."""
    rv = str(sim.resource_version)
    w = watch.Watch()
    names: list[str] = []
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    for event in w.stream(core.list_namespaced_config_map, "default", resource_version=rv):
        names.append(event["raw_object"]["metadata"]["name"])
        if len(names) == 1:
            assert 1 == sim.faults.drop_watches()
            core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
        else:
            w.stop()
    assert (["a", "b"], 2) == (names, len([r for r in sim.requests if r.watch]))


def test_abrupt_drop_breaks_the_stream(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """An abrupt drop cuts the connection mid-body: the client's generator raises a protocol error."""
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})

    def consume() -> None:
        for _event in watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=10):
            sim.faults.drop_watches(abrupt=True)

    with pytest.raises(urllib3.exceptions.ProtocolError):
        consume()
