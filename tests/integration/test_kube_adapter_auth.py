"""The Kubernetes adapter's request preparation: the auth header over real HTTP, refreshed on time.

The adapter takes the URL prefix, default headers and the bearer token once every AUTH_REFRESH_SECONDS
instead of on every request; these tests prove that a rotated token is still picked up, that the refresh
hook does not run per request, and that query strings and bodies arrive as the API server expects.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes.client import Configuration

from provisioner.adapters.kube import AUTH_REFRESH_SECONDS, KubeAdapter


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "content_type": self.headers.get("Content-Type"),
                "body": json.loads(body) if body else None,
            }
        )
        out = json.dumps({"metadata": {"name": "x"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PATCH = _answer  # noqa: N815 - http.server's naming

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def _adapter(url: str, now: list[float], hook_calls: list[int], token: list[str]) -> KubeAdapter:
    config = Configuration()
    config.host = url
    config.api_key = {"authorization": token[0]}
    config.api_key_prefix = {"authorization": "Bearer"}

    def refresh(cfg: Any) -> None:
        hook_calls.append(1)
        cfg.api_key = {"authorization": token[0]}

    config.refresh_api_key_hook = refresh
    return KubeAdapter(config, qps=1000, burst=1000, clock=lambda: now[0])


def test_the_token_refresh_hook_runs_once_per_interval_and_a_rotated_token_is_used(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    """Ten requests within the interval: one hook run, one token; after it the rotated token is sent."""
    url, seen = server
    now, hooks, token = [100.0], [], ["old-token"]
    kube = _adapter(url, now, hooks, token)
    try:
        for _ in range(10):
            kube.get("persistentvolumes", "pv-1")
        assert 1 == len(hooks)
        token[0] = "new-token"
        now[0] += AUTH_REFRESH_SECONDS - 0.01
        kube.get("persistentvolumes", "pv-1")
        now[0] += 0.02
        kube.get("persistentvolumes", "pv-1")
    finally:
        kube.close()
    assert ["Bearer old-token"] * 11 + ["Bearer new-token"] == [r["auth"] for r in seen]
    assert 2 == len(hooks)


def test_paths_queries_bodies_and_patch_types_arrive_as_sent(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    """A list's query string, a namespaced create's body and a JSON patch's content type, on the wire."""
    url, seen = server
    kube = _adapter(url, [0.0], [], ["t"])
    try:
        kube.list("persistentvolumeclaims", label_selector="a=b", page_size=7)
        kube.create("events", {"metadata": {"name": "e"}, "reason": "R"}, namespace="ns")
        ops = [{"op": "test", "path": "/metadata/uid", "value": "u"}]
        kube.patch("persistentvolumeclaims", "c", ops, namespace="ns", patch_type="json")
    finally:
        kube.close()
    assert [
        ("GET", "/api/v1/persistentvolumeclaims?limit=7&labelSelector=a%3Db", None, None),
        (
            "POST",
            "/api/v1/namespaces/ns/events",
            "application/json",
            {"metadata": {"name": "e"}, "reason": "R"},
        ),
        ("PATCH", "/api/v1/namespaces/ns/persistentvolumeclaims/c", "application/json-patch+json", ops),
    ] == [
        (r["method"], r["path"], r["content_type"] if r["method"] != "GET" else None, r["body"]) for r in seen
    ]
