"""Streaming lists (WatchList, sendInitialEvents) over raw HTTP, as client-go 1.35 informers start."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from provisioner.testworld.kube_sim import KubeSimulator
from tests.integration.kube_sim.rawhttp import request, summary, watch

CM = "/api/v1/namespaces/default/configmaps"
WATCHLIST = "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"


@pytest.fixture
def quiet() -> Iterator[KubeSimulator]:
    """A simulator without controllers or periodic bookmarks, so event sequences are exact."""
    with KubeSimulator(bookmark_interval=3600, controllers=False) as s:
        yield s


def _cm(sim: KubeSimulator, name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return sim.create("configmaps", {"metadata": {"name": name, "labels": labels}}, namespace)


def _end_bookmark(rv: int) -> dict[str, Any]:
    return {
        "type": "BOOKMARK",
        "object": {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}},
        },
    }


def test_initial_events_then_end_bookmark_then_live_changes(quiet: KubeSimulator) -> None:
    """ADDED for every current object in key order, the annotated BOOKMARK at the state's RV, then changes."""
    _cm(quiet, "b")
    _cm(quiet, "a")
    _cm(quiet, "elsewhere", "kube-system")
    rv = quiet.resource_version
    with watch(quiet, f"{CM}?{WATCHLIST}") as stream:
        initial = stream.take(3)
        _cm(quiet, "c")
        quiet.delete("configmaps", "default", "a")
        live = stream.take(2)
    assert [("ADDED", "a"), ("ADDED", "b")] == [summary(e) for e in initial[:2]]
    assert _end_bookmark(rv) == initial[2]
    assert [("ADDED", "c"), ("DELETED", "a")] == [summary(e) for e in live]
    assert [str(rv + 1), str(rv + 2)] == [e["object"]["metadata"]["resourceVersion"] for e in live]


def test_initial_events_honour_selectors_across_namespaces(quiet: KubeSimulator) -> None:
    """The all-namespaces collection with a label selector sends only matching objects, then the bookmark."""
    _cm(quiet, "x", "kube-system", app="db")
    _cm(quiet, "y", "default", app="web")
    _cm(quiet, "z", "default", app="db")
    rv = quiet.resource_version
    with watch(quiet, f"/api/v1/configmaps?{WATCHLIST}&labelSelector=app%3Ddb") as stream:
        events = stream.take(3)
    assert [("ADDED", "z"), ("ADDED", "x")] == [summary(e) for e in events[:2]]  # key order: ns, name
    assert _end_bookmark(rv) == events[2]


def test_field_selector_and_empty_result_still_end_with_the_bookmark(quiet: KubeSimulator) -> None:
    """Nothing matches: the stream starts with the bookmark alone."""
    _cm(quiet, "a")
    rv = quiet.resource_version
    with watch(quiet, f"{CM}?{WATCHLIST}&fieldSelector=metadata.name%3Dnone") as stream:
        assert [_end_bookmark(rv)] == stream.take(1)


@pytest.mark.parametrize("resource_version", ["", "0", "1"])
def test_any_resource_version_serves_the_current_state(quiet: KubeSimulator, resource_version: str) -> None:
    """RV unset/""/"0"/an old one: the most recent state (NotOlderThan), even after history compaction."""
    _cm(quiet, "a")
    quiet.faults.compact_history()
    rv = quiet.resource_version
    with watch(quiet, f"{CM}?{WATCHLIST}&resourceVersion={resource_version}") as stream:
        events = stream.take(2)
    assert [("ADDED", "a"), _end_bookmark(rv)] == [summary(events[0]), events[1]]


def test_bookmark_rv_is_resumable(quiet: KubeSimulator) -> None:
    """A plain watch from the bookmark's RV sees exactly the changes made after the initial state."""
    _cm(quiet, "a")
    with watch(quiet, f"{CM}?{WATCHLIST}") as stream:
        rv = stream.take(2)[1]["object"]["metadata"]["resourceVersion"]
    _cm(quiet, "b")
    with watch(quiet, f"{CM}?watch=1&resourceVersion={rv}") as stream:
        assert [("ADDED", "b")] == [summary(e) for e in stream.take(1)]


def test_without_allow_watch_bookmarks_no_end_bookmark(quiet: KubeSimulator) -> None:
    """Like the server: initial events are sent, the end bookmark only when bookmarks are allowed."""
    _cm(quiet, "a")
    query = "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
    with watch(quiet, f"{CM}?{query}") as stream:
        first = stream.next()
        _cm(quiet, "b")
        second = stream.next()
    assert [("ADDED", "a"), ("ADDED", "b")] == [summary(first), summary(second)]


def test_send_initial_events_false_starts_at_most_recent(quiet: KubeSimulator) -> None:
    """sendInitialEvents=false without RV: no synthetic ADDED, no end bookmark — only later changes."""
    _cm(quiet, "a")
    query = "watch=1&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    with watch(quiet, f"{CM}?{query}") as stream:
        _cm(quiet, "b")
        assert [("ADDED", "b")] == [summary(e) for e in stream.take(1)]


def test_send_initial_events_false_with_rv_replays_after_it(quiet: KubeSimulator) -> None:
    """sendInitialEvents=false with an RV behaves as a normal watch from that RV."""
    rv = _cm(quiet, "a")["metadata"]["resourceVersion"]
    _cm(quiet, "b")
    query = f"watch=1&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&resourceVersion={rv}"
    with watch(quiet, f"{CM}?{query}") as stream:
        assert [("ADDED", "b")] == [summary(e) for e in stream.take(1)]


def _invalid(causes: list[tuple[str, str, str]]) -> dict[str, Any]:
    texts = [f"{f}: {m}" for _, f, m in causes]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'ListOptions.meta.k8s.io "" is invalid: '
        + (texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"),
        "reason": "Invalid",
        "details": {
            "group": "meta.k8s.io",
            "kind": "ListOptions",
            "causes": [{"reason": r, "message": m, "field": f} for r, f, m in causes],
        },
        "code": 422,
    }


NEEDS_NOT_OLDER_THAN = (
    "FieldValueForbidden",
    "resourceVersionMatch",
    "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
)


@pytest.mark.parametrize(
    ("query", "causes"),
    [
        ("watch=1&sendInitialEvents=true&allowWatchBookmarks=true", [NEEDS_NOT_OLDER_THAN]),
        ("watch=1&sendInitialEvents=false", [NEEDS_NOT_OLDER_THAN]),
        (
            "watch=1&sendInitialEvents=true&resourceVersionMatch=Exact&allowWatchBookmarks=true",
            [
                NEEDS_NOT_OLDER_THAN,
                (
                    "FieldValueNotSupported",
                    "resourceVersionMatch",
                    'Unsupported value: "Exact": supported values: "NotOlderThan"',
                ),
            ],
        ),
        (
            "watch=1&resourceVersionMatch=NotOlderThan",
            [
                (
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is "
                    "provided",
                )
            ],
        ),
        (
            "sendInitialEvents=true",
            [
                (
                    "FieldValueForbidden",
                    "sendInitialEvents",
                    "Forbidden: sendInitialEvents is forbidden for list",
                )
            ],
        ),
        (
            "resourceVersionMatch=NotOlderThan",
            [
                (
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                )
            ],
        ),
    ],
)
def test_invalid_option_combinations_are_422(
    quiet: KubeSimulator, query: str, causes: list[tuple[str, str, str]]
) -> None:
    """The server's ListOptions validation: 422 Invalid with one cause per violated rule, no stream."""
    status, headers, body = request(quiet, "GET", f"{CM}?{query}")
    assert (422, "application/json", _invalid(causes)) == (status, headers["content-type"], body)
    assert [422] == [r.status for r in quiet.requests if r.path == CM]


def test_list_with_resource_version_match_and_rv_is_accepted(quiet: KubeSimulator) -> None:
    """A list with resourceVersion and resourceVersionMatch=NotOlderThan is valid (served from now)."""
    _cm(quiet, "a")
    status, _, body = request(quiet, "GET", f"{CM}?resourceVersion=0&resourceVersionMatch=NotOlderThan")
    assert (200, ["a"]) == (status, [i["metadata"]["name"] for i in body["items"]])
