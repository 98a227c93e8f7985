"""Entry point of the real OpenStack Keystone subprocess (PyPI ``keystone``) for the real-Cinder tier.

Why a module of our own instead of ``keystone-manage`` + uWSGI/Apache: the tier wants Keystone up in about
two seconds, from one Python process, with no web server to install. This process syncs the sqlite schema,
runs Keystone's own ``Bootstrapper`` (default domain, admin user and
project, the reader/member/manager/admin/service roles, RegionOne, the identity service and endpoints) and
serves Keystone's unmodified Flask application from the standard library's threaded WSGI server.

One addition: a WSGI wrapper records every request (method, path, status, and for ``POST /v3/auth/tokens``
which credential logged in: user name or id, application credential id, or a token), answered as JSON at
``GET /_testworld/requests``. Tests count logins there (a provisioner must reuse its token, not log in per
call). Passwords and secrets are never recorded.

Usage: ``python -m provisioner.testworld.real_cinder.keystone_main --ready-file F --config-file keystone.conf
--admin-password P --public-url URL``. When it listens, ``F`` receives ``{"port": <port>, "pid": <pid>}``.
SIGTERM (or the parent going away) ends the process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref import simple_server

_RECORD_PATH = "/_testworld/requests"


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Access lines go through the recorder, not stderr."""


def _who(body: Any) -> dict[str, Any]:
    """Which credential a ``POST /v3/auth/tokens`` body presents (never the secret itself)."""
    identity = body.get("auth", {}).get("identity", {}) if isinstance(body, dict) else {}
    methods = list(identity.get("methods", []))
    who: dict[str, Any] = {"methods": methods}
    user = identity.get("password", {}).get("user", {})
    if user:
        who["user"] = user.get("name") or user.get("id")
    credential = identity.get("application_credential", {})
    if credential:
        who["application_credential"] = credential.get("id") or credential.get("name")
    if "token" in methods:
        who["token"] = True
    return who


class _Recorder:
    """WSGI wrapper: one record per request, readable at ``GET /_testworld/requests``."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == _RECORD_PATH:
            with self._lock:
                payload = json.dumps({"requests": self._records}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [payload]
        record: dict[str, Any] = {"method": environ.get("REQUEST_METHOD"), "path": path, "at": time.time()}
        if record["method"] == "POST" and path.rstrip("/") == "/v3/auth/tokens":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(raw)
            try:
                record.update(_who(json.loads(raw or b"{}")))
            except ValueError:
                record["methods"] = ["<unreadable>"]

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            record["status"] = int(status.split(" ", 1)[0])
            with self._lock:
                self._records.append(record)
            return start_response(status, headers, exc_info)

        return self._app(environ, recording_start_response)


def _prepare(admin_password: str, public_url: str, region: str) -> None:
    """Schema and Keystone's own bootstrap, in this process (no keystone-manage runs).

    The fernet key repositories are written by the launcher before this process starts: Keystone's
    application refuses to load without them.
    """
    from keystone.cmd import bootstrap
    from keystone.common.sql import upgrades

    upgrades.offline_sync_database_to_version()
    boot = bootstrap.Bootstrapper()
    boot.admin_password = admin_password
    boot.admin_username = "admin"
    boot.project_name = "admin"
    boot.admin_role_name = "admin"
    boot.service_name = "keystone"
    boot.public_url = public_url
    boot.internal_url = public_url
    boot.region_id = region
    boot.immutable_roles = True
    boot.bootstrap()


def _run(config_file: Path, ready_file: Path, admin_password: str, host: str, region: str) -> int:
    import keystone.server
    from keystone.server.flask import application
    from keystone.server.flask import core as flask_core

    # Bind first: the bootstrap writes the identity endpoint, which must name the real port.
    server = simple_server.make_server(
        host, 0, lambda e, s: [], server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    port = server.server_address[1]
    keystone.server.configure(config_files=[str(config_file)])
    # What ``keystone.server.flask.core.initialize_application`` does, with the bootstrap in between: the
    # bootstrapper loads Keystone's backends itself (they may be loaded once per process).
    _prepare(admin_password, f"http://{host}:{port}/v3", region)
    app = flask_core.setup_app_middleware(application.application_factory("public"))
    server.set_app(_Recorder(app))

    stopping: list[int] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
    tmp.replace(ready_file)
    print(f"keystone ready on {host}:{port}", file=sys.stderr, flush=True)
    parent = os.getppid()
    while not stopping and os.getppid() == parent:
        time.sleep(0.2)
    server.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Prepare and serve Keystone until SIGTERM or the parent goes away."""
    parser = argparse.ArgumentParser(prog="keystone_main")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--config-file", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--region", default="RegionOne")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sys.argv = sys.argv[:1]  # oslo.config parses sys.argv too; Keystone's options come from the file
    # The bootstrap password comes from the environment, never argv (visible in ps).
    password = os.environ.pop("TESTWORLD_KEYSTONE_ADMIN_PASSWORD", "")
    try:
        code = _run(args.config_file, args.ready_file, password, args.host, args.region)
    except BaseException:  # report start-up failures in the log the launcher shows, then really exit
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
