"""HTTP front end: URL routing, JSON bodies, chunked watch streams, and a server that shuts down cleanly.

The official client speaks HTTP/1.1 with keep-alive and reads watches with urllib3's chunked reader (a
close-delimited body would only be read at EOF), so responses carry Content-Length and watch streams use
``Transfer-Encoding: chunked``. The server tracks its connections so :meth:`SimServer.close` leaves no
thread or socket behind.
"""

from __future__ import annotations

import json
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from provisioner.testworld.kube_sim import listopts, media
from provisioner.testworld.kube_sim import status as errors
from provisioner.testworld.kube_sim.faults import Faults, RequestRecord
from provisioner.testworld.kube_sim.routes import Route, parse_route
from provisioner.testworld.kube_sim.selectors import (
    compile_selectors,
    parse_field_selector,
    parse_label_selector,
)
from provisioner.testworld.kube_sim.store import Store
from provisioner.testworld.kube_sim.watchers import BOOKMARK, DROP, END, EXPIRE, Watcher, bookmark_object

Obj = dict[str, Any]
_LIVENESS_TICK = 0.5
_MAX_BATCH = 512


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(kw_only=True)
class ApiContext:
    """What request handlers share: the store, faults and server-wide settings."""

    store: Store
    faults: Faults
    bookmark_interval: float
    watch_timeout: float
    stopping: threading.Event


class SimServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that joins its handler threads and can cut every open connection."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 128  # the default backlog of 5 refuses connections under a controller's burst

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection before handing it to a thread."""
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget and close a finished connection."""
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (reset, broken pipe) are normal; anything else is printed as usual."""
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        """Shut down every open connection so idle keep-alive threads return."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    """One connection; each request is routed to the store."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = (
        True  # headers and body go out in separate writes: avoid 40 ms delayed-ACK stalls
    )
    server: SimServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request stderr logging (the request log records requests)."""

    def do_GET(self) -> None:
        """GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """POST."""
        self._dispatch("POST")

    def do_PUT(self) -> None:
        """PUT."""
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        """PATCH."""
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        """DELETE."""
        self._dispatch("DELETE")

    # --- plumbing ----------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        ctx = self.server.ctx
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        is_watch = method == "GET" and query.get("watch", "") in ("1", "true", "True")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""

        def record(status: int) -> None:  # before the response is sent, so clients see it in the log
            ctx.faults.record(
                RequestRecord(method=method, path=url.path, query=url.query, status=status, watch=is_watch)
            )

        try:
            latency, fault = ctx.faults.before_request(method, url.path, is_watch)
            if latency:
                ctx.stopping.wait(latency)
            if fault is not None:
                raise fault
            media.check_accept(self.headers.get("Accept"))
            if is_watch:
                self._watch(url.path, query, lambda: record(200))
                return
            status, body = self._handle(method, url.path, query, raw)
            record(status)
            self._send(status, body)
        except errors.ApiError as e:
            record(e.code)
            headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else {}
            self._send(e.code, e.status_body(), headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = _dumps(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self, raw: bytes) -> Any:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise errors.bad_request(f"invalid JSON in request body: {e}") from e

    def _manager(self, query: dict[str, str]) -> str:
        return query.get("fieldManager") or (self.headers.get("User-Agent") or "unknown").split("/")[0]

    def _handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        route = parse_route(path)
        if route is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if not isinstance(route, Route):
            if method != "GET":
                raise errors.method_not_allowed(method)
            return 200, route
        if query.get("dryRun"):
            raise errors.bad_request("dryRun is not supported by the simulator")
        store, rt, ns, name = self.server.ctx.store, route.rt, route.namespace or "", route.name
        if name is None:
            if method == "GET":
                listopts.validate_list(query)
                return 200, self._list(route, query)
            if method == "POST" and (ns or not rt.namespaced):
                media.check_body_type(self.headers.get("Content-Type"))
                return 201, store.create(rt, ns, self._json_body(raw), manager=self._manager(query))
            if method == "DELETE":
                return 200, self._delete_collection(route, query, raw)
            raise errors.method_not_allowed(method)
        if method == "GET":
            return 200, store.get(rt, ns, name)
        if method == "PUT":
            media.check_body_type(self.headers.get("Content-Type"))
            body = self._json_body(raw)
            return 200, store.update(
                rt, ns, name, body, subresource=route.subresource, manager=self._manager(query)
            )
        if method == "PATCH":
            ctype = media.check_patch_type(self.headers.get("Content-Type"), builtin=rt.builtin)
            return 200, store.patch(
                rt,
                ns,
                name,
                ctype,
                self._json_body(raw),
                subresource=route.subresource,
                manager=self._manager(query),
            )
        if method == "DELETE" and not route.subresource:
            options = self._delete_options(query, raw)
            obj, deleted = store.delete(rt, ns, name, options)
            if deleted and not rt.returns_deleted_object:
                return 200, errors.success_status(rt, obj)
            foreground = options.get("propagationPolicy") == "Foreground"
            return (202 if foreground and not deleted else 200), obj
        raise errors.method_not_allowed(method)

    def _delete_options(self, query: dict[str, str], raw: bytes) -> Obj:
        if raw:
            media.check_body_type(self.headers.get("Content-Type"))
        options = self._json_body(raw) or {}
        if not isinstance(options, dict):
            raise errors.bad_request("DeleteOptions must be an object")
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "orphanDependents" in query:
            options["orphanDependents"] = query["orphanDependents"] == "true"
        return options

    def _predicate(self, route: Route, query: dict[str, str]) -> Callable[[Obj], bool] | None:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), route.rt)
        return compile_selectors(labels, fields)

    def _list(self, route: Route, query: dict[str, str]) -> Obj:
        rt = route.rt
        try:
            limit = int(query.get("limit") or 0)
        except ValueError as e:
            raise errors.bad_request("limit must be an integer") from e
        items, rv, token, remaining = self.server.ctx.store.list(
            rt,
            route.namespace,
            self._predicate(route, query),
            limit=limit,
            continue_token=query.get("continue", ""),
        )
        if rt.builtin:  # the real server omits kind/apiVersion on the items of built-in lists
            items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        meta: Obj = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    def _delete_collection(self, route: Route, query: dict[str, str], raw: bytes) -> Obj:
        store, options = self.server.ctx.store, self._delete_options(query, raw)
        items, _, _, _ = store.list(route.rt, route.namespace, self._predicate(route, query))
        for obj in items:
            meta = obj["metadata"]
            try:
                store.delete(route.rt, meta.get("namespace", ""), meta["name"], options)
            except errors.ApiError as e:
                if e.code != 404:
                    raise
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    # --- watch -------------------------------------------------------------------------------------------

    def _watch(self, path: str, query: dict[str, str], on_start: Callable[[], None]) -> None:
        ctx = self.server.ctx
        route = parse_route(path)
        if not isinstance(route, Route) or route.name is not None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        predicate = self._predicate(route, query)
        opts = listopts.parse_watch(query)
        try:
            timeout = float(query.get("timeoutSeconds") or 0) or ctx.watch_timeout
        except ValueError as e:
            raise errors.bad_request("timeoutSeconds must be a number") from e
        on_start()
        # Register before answering, as the real server does: once a client sees 200 it sees every later
        # change (a watch "from the most recent state" must not miss one made right after the headers).
        failure: errors.ApiError | None = None
        try:
            w = ctx.store.watch(
                route.rt,
                route.namespace,
                predicate,
                opts.resource_version,
                allow_bookmarks=opts.allow_bookmarks,
                send_initial_events=opts.send_initial_events,
                initial_events_end=opts.initial_events_end_bookmark,
            )
        except errors.ApiError as e:  # like the watch cache: 200, then one ERROR event
            failure = e
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if failure is not None:
                self._chunk(_dumps({"type": "ERROR", "object": failure.status_body()}) + b"\n")
                self._chunk(b"")
                return
            self._stream(w, route, time.monotonic() + timeout)
        except OSError:
            self.close_connection = True
        finally:
            if failure is None:
                ctx.store.unwatch(w)

    def _stream(self, w: Watcher, route: Route, deadline: float) -> None:
        ctx = self.server.ctx
        interval = ctx.bookmark_interval
        next_bookmark = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if now >= deadline or ctx.stopping.is_set():
                self._chunk(b"")
                return
            wait = min(deadline, next_bookmark if w.allow_bookmarks else deadline, now + _LIVENESS_TICK) - now
            try:
                items = [w.queue.get(timeout=max(wait, 0.001))]
            except queue.Empty:
                items = []
            while items and len(items) < _MAX_BATCH:
                try:
                    items.append(w.queue.get_nowait())
                except queue.Empty:
                    break
            lines: list[bytes] = []
            for kind, obj in items:
                if kind == DROP:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if kind in (END, EXPIRE):
                    if kind == EXPIRE:
                        err = errors.too_old(0, ctx.store.resource_version).status_body()
                        err["message"] = "too old resource version (history compacted)"
                        lines.append(_dumps({"type": "ERROR", "object": err}))
                    if lines:
                        self._chunk(b"\n".join(lines) + b"\n")
                    self._chunk(b"")
                    return
                lines.append(_dumps({"type": kind, "object": obj}))
            if w.allow_bookmarks and time.monotonic() >= next_bookmark:
                rv = ctx.store.bookmark_rv(w)
                if rv is not None:
                    bookmark = bookmark_object(route.rt.kind, route.rt.api_version, rv)
                    lines.append(_dumps({"type": BOOKMARK, "object": bookmark}))
                    next_bookmark = time.monotonic() + interval
            if lines:
                self._chunk(b"\n".join(lines) + b"\n")
            elif not items and self._client_gone():
                self.close_connection = True
                return

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        # poll, not select: select() cannot watch a descriptor numbered 1024 or more, and a long chaos run
        # (every replica's clients and the servers' ends in one process) goes past that.
        poller = select.poll()
        poller.register(self.connection, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not poller.poll(0):
            return False
        try:
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
            return peeked == b""
        except OSError:
            return True
