"""The Cinder emulator's HTTP face: Keystone v3 tokens and the Block Storage v3 REST API.

Why HTTP at all: the provisioner's adapter must be tested through the *real* python-cinderclient and
keystoneauth1 (URL building, microversion headers, error parsing, pagination links), so the emulator speaks
the wire protocol. This module only parses requests, applies injected faults and renders responses in
real Cinder's shapes; the rules live in ``cinder_emulator_state``.

Layout (devstack-like): Keystone under ``/identity`` (``/identity/v3/auth/tokens``), Block Storage at the
root (``GET /`` version discovery, ``/v3/<project_id>/…``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from provisioner.testworld.cinder_emulator.faults import Faults
from provisioner.testworld.cinder_emulator.keystone import keystone
from provisioner.testworld.cinder_emulator.routes import route
from provisioner.testworld.cinder_emulator.state import ApiError, invalid
from provisioner.testworld.cinder_emulator.store import Store

MIN_VERSION = (3, 0)
_HEADER = "OpenStack-API-Version"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One request the emulator answered (for tests: what did the client really send?)."""

    method: str
    path: str
    operation: str
    microversion: str
    status: int
    request_id: str
    at: float = field(default_factory=time.monotonic)  # when the answer was recorded (for timing tests)
    body: Any = None  # the parsed JSON request body (None when there was none or it did not parse)
    result_id: str | None = None  # id of the object a successful answer describes (a create's new id)


@dataclass(slots=True)
class Identity:
    """Keystone's view: the one project/user, an application credential, issued tokens."""

    project_id: str
    project_name: str
    username: str
    password: str
    app_cred_id: str
    app_cred_secret: str
    allow_noauth_tokens: bool
    tokens: set[str]


class Server:
    """Shared by all handler threads: state, faults, identity, call log and in-flight accounting."""

    def __init__(self, *, store: Store, faults: Faults, identity: Identity, max_version: tuple[int, int]):
        self.store = store
        self.faults = faults
        self.identity = identity
        self.max_version = max_version
        self.max_limit = 1000
        self.base_url = ""
        self.calls: list[CallRecord] = []
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.lock = threading.Lock()

    def record(self, rec: CallRecord) -> None:
        """Append to the call log."""
        with self.lock:
            self.calls.append(rec)


def _version_doc(server: Server, href: str) -> dict[str, Any]:
    major, minor = server.max_version
    return {
        "id": "v3.0",
        "status": "CURRENT",
        "version": f"{major}.{minor}",
        "min_version": "3.0",
        "updated": "2023-08-31T00:00:00Z",
        "links": [{"href": href, "rel": "self"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
        ],
    }


def _parse_version(text: str, server: Server) -> tuple[int, int]:
    value = text.strip()
    if value.lower().startswith("volume"):
        value = value[len("volume") :].strip()
    if value == "latest":
        return server.max_version
    major, _, minor = value.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise ApiError(400, "badRequest", f"API Version String {value} is of invalid format.")
    version = (int(major), int(minor))
    if not MIN_VERSION <= version <= server.max_version:
        mx = "{}.{}".format(*server.max_version)
        raise ApiError(
            406,
            "computeFault",
            f"Version {value} is not supported by the API. Minimum is 3.0 and maximum is {mx}.",
        )
    return version


def _result_id(out: Any) -> str | None:
    """The ``id`` of a one-object answer like ``{"volume": {"id": …}}`` (lists and tokens have none)."""
    if isinstance(out, dict) and len(out) == 1:
        (inner,) = out.values()
        if isinstance(inner, dict) and isinstance(inner.get("id"), str):
            return str(inner["id"])
    return None


class Handler(BaseHTTPRequestHandler):
    """One request; routes to Keystone or Block Storage."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: avoid 40 ms stalls
    server_version = "cinder-emulator"
    emu: Server  # set on the subclass the emulator creates

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log (the call log is the record)."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # --- plumbing -------------------------------------------------------------------------------------

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise invalid("Malformed request body") from None

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _serve(self, method: str) -> None:
        emu = self.emu
        request_id = f"req-{uuid.uuid4()}"
        headers = {"x-openstack-request-id": request_id}
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query))
        operation, version_text = "unknown", "3.0"
        status = 500
        body: Any = None
        out: Any = None
        with emu.lock:
            emu.in_flight += 1
            emu.max_in_flight_seen = max(emu.max_in_flight_seen, emu.in_flight)
        try:
            body = self._body()
            if path.startswith("/identity"):
                operation = "auth"
                self._apply_faults(operation)
                status, out, extra = keystone(emu, method, path, body)
            elif path in ("/", "/v3"):
                operation = "versions"
                href = f"{emu.base_url}/v3/"
                status, out, extra = (
                    (300 if path == "/" else 200),
                    {"versions": [_version_doc(emu, href)]},
                    {},
                )
            else:
                version = _parse_version(self.headers.get(_HEADER) or "volume 3.0", emu)
                version_text = f"{version[0]}.{version[1]}"
                headers[_HEADER] = f"volume {version_text}"
                headers["Vary"] = _HEADER
                self._check_token(path)
                found = route(method, path, body, version, query)
                operation = found.operation
                self._apply_faults(operation)
                status, out = found.run(emu.store, emu.max_limit, emu.base_url)
                extra = {}
            headers.update(extra)
        except ApiError as e:
            status, out = e.status, {e.kind: {"code": e.status, "message": e.message}}
            if e.retry_after is not None:
                headers["Retry-After"] = f"{e.retry_after:g}"
        except Exception as e:  # a bug in the emulator: answer like Cinder's 500, keep serving
            status, out = 500, {"computeFault": {"code": 500, "message": f"emulator error: {e!r}"}}
        finally:
            with emu.lock:
                emu.in_flight -= 1
        emu.record(
            CallRecord(
                method=method,
                path=self.path,
                operation=operation,
                microversion=version_text,
                status=status,
                request_id=request_id,
                body=body,
                result_id=_result_id(out) if status < 300 else None,
            )
        )
        self._send(status, out, headers)

    def _apply_faults(self, operation: str) -> None:
        delay = self.emu.faults.latency(operation)
        if delay > 0:
            time.sleep(delay)
        failure = self.emu.faults.take_failure(operation)
        if failure is not None:
            kind = {
                400: "badRequest",
                404: "itemNotFound",
                409: "conflictingRequest",
                413: "overLimit",
                429: "overLimit",
            }.get(failure.status, "computeFault")
            raise ApiError(failure.status, kind, failure.message, retry_after=failure.retry_after)

    def _check_token(self, path: str) -> None:
        ident = self.emu.identity
        token = self.headers.get("X-Auth-Token") or ""
        ok = token in ident.tokens or (ident.allow_noauth_tokens and token.endswith(":" + ident.project_id))
        if not ok:
            raise ApiError(401, "unauthorized", "The request you have made requires authentication.")
        segments = path.split("/")
        if len(segments) < 3 or segments[2] != ident.project_id:
            raise ApiError(404, "itemNotFound", "Unknown project in URL.")
