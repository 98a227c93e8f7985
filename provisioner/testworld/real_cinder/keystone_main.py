"""Entry point of the real OpenStack Keystone subprocess (PyPI ``keystone``) for the real-Cinder tier.

Why a module of our own instead of ``keystone-manage`` + uWSGI/Apache: the tier wants Keystone up in about
two seconds, from one Python process, with no web server to install. This process syncs the sqlite schema,
runs Keystone's own ``Bootstrapper`` (default domain, admin user and project, the reader/member/manager/
admin/service roles, RegionOne, the identity service and endpoints), creates the launcher's seed
(projects, users, role grants, an application credential) through Keystone's provider APIs, and serves
Keystone's unmodified Flask application from the standard library's threaded WSGI server.

One addition: a WSGI wrapper records every request (method, path, status, and for ``POST /v3/auth/tokens``
which credential logged in: user name or id, application credential id, or a token), answered as JSON at
``GET /_testworld/requests``. Tests count logins there (a provisioner must reuse its token, not log in per
call). Passwords and secrets are never recorded.

Usage: ``TESTWORLD_KEYSTONE_SEED=<json> python -m provisioner.testworld.real_cinder.keystone_main
--ready-file F --config-file keystone.conf [--region R]``. When it listens, ``F`` receives ``{"port", "pid",
"projects": {name: id}, "users": {name: id}, "app_credential_id"}``. SIGTERM (or the parent going away)
ends the process.
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


def _prepare(seed: dict[str, Any], public_url: str, region: str) -> dict[str, Any]:
    """Schema, Keystone's own bootstrap and the seed's identities, in this process.

    No ``keystone-manage`` runs and no API round trips: the identities are created through Keystone's
    provider APIs (the managers its API calls), before the server takes requests. The fernet key
    repositories are written by the launcher before this process starts (the application refuses to
    load without them). Returns the ids of what was created.
    """
    import uuid

    from keystone.cmd import bootstrap
    from keystone.common import provider_api
    from keystone.common.sql import upgrades

    upgrades.offline_sync_database_to_version()
    boot = bootstrap.Bootstrapper()
    boot.admin_password = seed["admin_password"]
    boot.admin_username = "admin"
    boot.project_name = "admin"
    boot.admin_role_name = "admin"
    boot.service_name = "keystone"
    boot.public_url = public_url
    boot.internal_url = public_url
    boot.region_id = region
    boot.immutable_roles = True
    boot.bootstrap()

    apis: Any = provider_api.ProviderAPIs
    roles = {"admin": boot.admin_role_id, "member": boot.member_role_id, "service": boot.service_role_id}
    projects = {"admin": boot.project_id}
    for name in seed["projects"]:
        project_id = uuid.uuid4().hex
        body = {"id": project_id, "name": name, "domain_id": "default", "enabled": True}
        apis.resource_api.create_project(project_id, body)
        projects[name] = project_id
    users = {"admin": boot.admin_user_id}
    for user in seed["users"]:
        body = {
            "name": user["name"],
            "password": user["password"],
            "domain_id": "default",
            "enabled": True,
            "default_project_id": projects[user["project"]],
        }
        users[user["name"]] = apis.identity_api.create_user(body)["id"]
    for grant in seed["grants"]:
        apis.assignment_api.add_role_to_user_and_project(
            users[grant["user"]], projects[grant["project"]], roles[grant["role"]]
        )
    result: dict[str, Any] = {"projects": projects, "users": users}
    credential = seed.get("app_credential")
    if credential:
        # the roles a token of the user would carry on the project: the granted role and what it implies
        granted = apis.assignment_api.get_roles_for_user_and_project(
            users[credential["user"]], projects[credential["project"]]
        )
        created = apis.application_credential_api.create_application_credential(
            {
                "id": uuid.uuid4().hex,
                "name": credential["name"],
                "secret": credential["secret"],
                "user_id": users[credential["user"]],
                "project_id": projects[credential["project"]],
                "roles": [{"id": role_id} for role_id in granted],
                "unrestricted": False,
                "expires_at": None,
                "description": "cinder-provisioner (test world)",
            }
        )
        result["app_credential_id"] = created["id"]
    return result


def _run(config_file: Path, ready_file: Path, seed: dict[str, Any], host: str, region: str) -> int:
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
    created = _prepare(seed, f"http://{host}:{port}/v3", region)
    app = flask_core.setup_app_middleware(application.application_factory("public"))
    server.set_app(_Recorder(app))

    stopping: list[int] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid(), **created}))
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
    # The seed (with passwords and the credential's secret) comes from the environment, never argv.
    try:
        seed = json.loads(os.environ.pop("TESTWORLD_KEYSTONE_SEED"))
        code = _run(args.config_file, args.ready_file, seed, args.host, args.region)
    except BaseException:  # report start-up failures in the log the launcher shows, then really exit
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
