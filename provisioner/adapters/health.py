"""HTTP endpoints for Prometheus and the kubelet: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` fails (500, with a one-line reason) when a liveness check fails: the leader's lease renewals
are stuck, a worker or watch loop died, a worker is stuck in one step; the kubelet then restarts the pod.
A check that raises counts as failed. ``/readyz`` is ready when the informer caches have synced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthServer:
    """A tiny threaded HTTP server; ``port`` 0 picks a free port."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        alive: Callable[[], bool] = lambda: True,
        liveness: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``alive`` says healthy or not; ``liveness`` returns None when healthy, else the reason."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(outer.registry), CONTENT_TYPE_LATEST, 200
                elif path in ("/healthz", "/livez", "/healthz/leader-election"):
                    problem = outer.problem()
                    body = b"ok" if problem is None else f"unhealthy: {problem}".encode()
                    ctype, code = "text/plain", 200 if problem is None else 500
                elif path == "/readyz":
                    ok = outer._check(outer.ready)
                    body, ctype, code = (b"ok" if ok else b"not ready"), "text/plain", 200 if ok else 503
                else:
                    body, ctype, code = b"not found", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.registry = registry
        self.ready = ready
        self.alive = alive
        self.liveness = liveness
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    def problem(self) -> str | None:
        """Why ``/healthz`` fails now (one line), or None."""
        try:
            reason = self.liveness()
            if reason is None and not self.alive():
                reason = "liveness check failed"
        except Exception as e:  # a broken check must not look healthy
            reason = f"liveness check raised {type(e).__name__}"
        return None if reason is None else " ".join(reason.split())

    @staticmethod
    def _check(check: Callable[[], bool]) -> bool:
        try:
            return bool(check())
        except Exception:
            return False

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
