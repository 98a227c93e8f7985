"""The adapter's watch stream: newline-delimited events, however the server's chunks cut them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from kubernetes.client import Configuration

from provisioner.adapters.kube import KubeAdapter
from provisioner.domain.errors import KubeGone

EVENTS = [
    {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "1"}}},
    {"type": "MODIFIED", "object": {"metadata": {"name": "b", "annotations": {"x": "y\nz"}}}},
    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
]
STREAM = b"".join(orjson.dumps(e) + b"\n" for e in EVENTS[:2]) + b"\n" + orjson.dumps(EVENTS[2]) + b"\n"


class _Response:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def stream(self, _size: int, decode_content: bool = True) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


class _Streamed:
    def __init__(self, chunks: list[bytes]) -> None:
        self.response = _Response(chunks)


def _watch(chunks: list[bytes]) -> tuple[list[tuple[str, dict[str, Any]]], _Response]:
    adapter = KubeAdapter(Configuration(host="http://127.0.0.1:9"))
    streamed = _Streamed(chunks)
    adapter._call = lambda *a, **k: streamed  # type: ignore[method-assign]
    return list(adapter.watch("persistentvolumeclaims", resource_version="1")), streamed.response


def test_every_way_of_cutting_the_stream_in_three_yields_the_same_events() -> None:
    """Events whole in one chunk, several in one chunk, one cut across two or three chunks, empty chunks
    and a blank line between events: always the three events, in order, and the response is closed."""
    expected = [(e["type"], e["object"]) for e in EVENTS]
    cuts = sorted({*range(0, len(STREAM) + 1, 3), len(STREAM)} | {k for k, b in enumerate(STREAM) if b == 10})
    cuts = sorted(set(cuts) | {k + 1 for k, b in enumerate(STREAM) if b == 10})  # at and after each newline
    for i, j in itertools.combinations_with_replacement(cuts, 2):
        got, response = _watch([STREAM[:i], STREAM[i:j], STREAM[j:]])
        assert got == expected, (i, j)
        assert response.closed


def test_an_error_event_in_the_middle_of_a_chunk_raises_gone_after_the_events_before_it() -> None:
    gone = orjson.dumps({"type": "ERROR", "object": {"code": 410, "message": "too old"}}) + b"\n"
    adapter = KubeAdapter(Configuration(host="http://127.0.0.1:9"))
    streamed = _Streamed([orjson.dumps(EVENTS[0]) + b"\n" + gone + orjson.dumps(EVENTS[1]) + b"\n"])
    adapter._call = lambda *a, **k: streamed  # type: ignore[method-assign]
    seen: list[tuple[str, dict[str, Any]]] = []
    with pytest.raises(KubeGone):
        seen.extend(adapter.watch("persistentvolumeclaims", resource_version="1"))
    assert seen == [("ADDED", EVENTS[0]["object"])]
    assert streamed.response.closed
