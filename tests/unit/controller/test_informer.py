"""Informer: list then watch, re-watch after a drop, relist after 410, trimmed cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from provisioner.domain.errors import KubeGone, KubeUnavailable
from provisioner.runtime.informer import Informer, trim


def obj(name: str, rv: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "uid": name}, **extra}


class ScriptedSource:
    """Lists return the current state; each watch call plays the next script entry."""

    def __init__(self, state: list[dict[str, Any]], rv: str, scripts: list[Any]) -> None:
        self.state, self.rv, self.scripts = state, rv, scripts
        self.calls: list[tuple[str, str]] = []
        self.informer: Informer | None = None

    def list(self, resource: str) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list", ""))
        return list(self.state), self.rv

    def watch(
        self, resource: str, *, resource_version: str, timeout_seconds: int = 300
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        self.calls.append(("watch", resource_version))
        if not self.scripts:
            assert self.informer is not None
            self.informer._stop.set()
            return
        script = self.scripts.pop(0)
        if isinstance(script, Exception):
            raise script
        yield from script


def run(source: ScriptedSource) -> tuple[Informer, list[tuple[str, str]]]:
    inf = Informer("persistentvolumeclaims", source, sleep=lambda s: None)
    source.informer = inf
    seen: list[tuple[str, str]] = []
    inf.add_handler(lambda ev, old, new: seen.append((ev, (new or old or {})["metadata"]["name"])))
    inf.run()
    return inf, seen


def test_list_then_watch_applies_events_and_resumes_from_last_rv() -> None:
    """Events update the cache; after a stream ends the next watch starts at the last seen RV."""
    source = ScriptedSource(
        [obj("a", "1")],
        "1",
        [
            [
                ("ADDED", obj("b", "2")),
                ("MODIFIED", obj("a", "3")),
                ("BOOKMARK", {"metadata": {"resourceVersion": "7"}}),
            ],
            [("DELETED", obj("b", "8"))],
        ],
    )
    inf, seen = run(source)
    assert [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")] == seen
    assert [("list", ""), ("watch", "1"), ("watch", "7"), ("watch", "8")] == source.calls
    assert ["a"] == [o["metadata"]["name"] for o in inf.values()]


def test_gone_triggers_relist_with_diff() -> None:
    """410 → relist; objects that vanished meanwhile produce DELETED, new ones ADDED."""
    source = ScriptedSource([obj("a", "1")], "1", [KubeGone("too old")])

    def relist_state(resource: str) -> tuple[list[dict[str, Any]], str]:
        source.calls.append(("list", ""))
        if len([c for c in source.calls if c[0] == "list"]) == 1:
            return [obj("a", "1")], "1"
        return [obj("c", "9")], "9"

    source.list = relist_state  # type: ignore[method-assign]
    inf, seen = run(source)
    assert [("ADDED", "a"), ("ADDED", "c"), ("DELETED", "a")] == seen
    assert 2 == inf.relists


def test_transient_error_rewatches_without_relist() -> None:
    """A dropped connection re-watches from the last RV and does not relist."""
    source = ScriptedSource([obj("a", "1")], "1", [KubeUnavailable("reset"), [("MODIFIED", obj("a", "2"))]])
    inf, _ = run(source)
    assert 1 == inf.relists
    assert [("list", ""), ("watch", "1"), ("watch", "1"), ("watch", "2")] == source.calls


def test_trim_drops_managed_fields_and_secret_data() -> None:
    """Cached objects carry no managedFields, last-applied annotation or Secret data."""
    raw = {
        "metadata": {
            "name": "s",
            "managedFields": [{"x": 1}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "k": "v"},
        },
        "data": {"key": "c2VjcmV0"},
        "type": "Opaque",
    }
    assert {"metadata": {"name": "s", "annotations": {"k": "v"}}, "type": "Opaque"} == trim(raw)
