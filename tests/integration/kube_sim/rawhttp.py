"""Raw HTTP helpers (http.client) for tests that must see exactly what a non-Python client would."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from provisioner.testworld.kube_sim import KubeSimulator


def connect(sim: KubeSimulator, timeout: float = 5.0) -> http.client.HTTPConnection:
    """A new connection to ``sim`` (reads time out instead of hanging a test)."""
    url = urlsplit(sim.url)
    return http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=timeout)


def request(
    sim: KubeSimulator,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, decoded JSON body) of one request."""
    conn = connect(sim)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data) if data else None
    finally:
        conn.close()


class WatchStream:
    """An open watch: read its newline-delimited events one at a time."""

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.resp = resp

    def next(self) -> dict[str, Any]:
        """The next event (raises on a closed stream or after the connection's timeout)."""
        line = self.resp.readline()
        if not line:
            raise EOFError("watch stream ended")
        event: dict[str, Any] = json.loads(line)
        return event

    def take(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` events."""
        return [self.next() for _ in range(n)]


@contextmanager
def watch(sim: KubeSimulator, path: str, timeout: float = 5.0) -> Iterator[WatchStream]:
    """Open a watch on ``path`` (query included); it must answer 200 and stream chunked JSON."""
    conn = connect(sim, timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        assert (200, "chunked") == (resp.status, resp.getheader("Transfer-Encoding"))
        yield WatchStream(resp)
    finally:
        conn.close()


def summary(event: dict[str, Any]) -> tuple[str, str]:
    """(type, name) of an event (name "" for bookmarks)."""
    return event["type"], event["object"]["metadata"].get("name", "")
