"""Real OpenStack Keystone (PyPI ``keystone``) for the real-Cinder tier: launcher, identities, catalog.

Why: with Cinder in ``noauth`` the adapter's Keystone path (password and application-credential logins,
the service catalog's region and interface, token reuse, re-authentication after a 401) is only ever met
by the emulator's Keystone stand-in. This starts unmodified Keystone in a subprocess
(``keystone_main``: sqlite, fernet tokens, Keystone's own bootstrap, a threaded WSGI server) which, before
it serves, creates through Keystone's own provider APIs what a cloud operator would:

* project ``k8s`` with user ``provisioner`` (role ``member``) and an application credential of that user;
* project ``service`` with user ``cinder`` (role ``service``) for Cinder's keystonemiddleware;
* the ``admin`` user also gets ``admin`` on ``k8s`` (the launcher creates volume types there);
* once Cinder listens (over Keystone's v3 API, as the admin), the ``block-storage`` service with a
  ``public`` endpoint (``http://127.0.0.1:<port>/v3/%(project_id)s``) and an ``internal`` one
  (``http://localhost:…``) in the region; there is no ``admin`` endpoint, so asking for it proves a
  missing endpoint is reported.

``start_real_cinder(..., keystone=handle)`` runs Cinder with ``auth_strategy = keystone`` against it.
keystonemiddleware's token cache is off (``token_cache_time = -1``) so that a revoked token is refused on
the next request, as a cloud with a short cache would do eventually.

Usage::

    with start_keystone(tmp_path / "keystone") as keystone:
        with start_real_cinder(tmp_path / "cinder", keystone=keystone) as cinder:
            keystone.write_clouds_yaml(tmp_path / "clouds.yaml")
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.domain.errors import ProvisionerError

_LOCAL = "127.0.0.1"
REGION = "RegionOne"
#: Test-only credentials (tests plant and look for them; they must never appear in our logs).
ADMIN_PASSWORD = "keystone-admin-secret-0001"
PROVISIONER_PASSWORD = "provisioner-secret-0002"
CINDER_SERVICE_PASSWORD = "cinder-service-secret-0003"
PROJECT = "k8s"
USER = "provisioner"
APP_CREDENTIAL_NAME = "cinder-provisioner"


class KeystoneError(ProvisionerError):
    """Keystone did not start or refused a set-up call; the message ends with the log tail."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AppCredential:
    """An application credential of the ``provisioner`` user (``secret`` is shown once by Keystone)."""

    id: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeystoneHandle:
    """How to reach the running Keystone and the identities the launcher created in it."""

    #: The v3 identity endpoint (``http://127.0.0.1:<port>/v3``).
    auth_url: str
    region: str
    #: Project ``k8s``: where the provisioner (and the launcher's admin) work.
    project_id: str
    user_id: str
    app_credential: AppCredential
    token_expiration: int
    log_path: Path
    pid: int

    # --- calls ------------------------------------------------------------------------------------------

    def issue_token(self, username: str, password: str, project: str = PROJECT) -> str:
        """A project-scoped token for a Default-domain user (one login, recorded like any other)."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": username, "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        token, _ = _login(self.auth_url, body)
        return token

    def admin_token(self) -> str:
        """An ``admin`` token scoped to project ``k8s`` (creates types, reads os-services there)."""
        return self.issue_token("admin", ADMIN_PASSWORD)

    def revoke(self, token: str) -> None:
        """Revoke ``token`` (``DELETE /v3/auth/tokens``): Keystone refuses it from now on."""
        _call(
            "DELETE", f"{self.auth_url}/auth/tokens", self.admin_token(), headers={"X-Subject-Token": token}
        )

    def requests(self) -> list[dict[str, Any]]:
        """Every request Keystone served so far (method, path, status; for logins, who logged in)."""
        base = self.auth_url.removesuffix("/v3")
        records: list[dict[str, Any]] = _call("GET", f"{base}/_testworld/requests", None)["requests"]
        return records

    def logins(self, *, user: str | None = None, application_credential: str | None = None) -> int:
        """Successful ``POST /v3/auth/tokens`` for ``user`` (a name) or ``application_credential`` (an id)."""
        return sum(
            1
            for r in self.requests()
            if r["method"] == "POST"
            and r["path"].rstrip("/") == "/v3/auth/tokens"
            and r.get("status") == 201
            and (user is None or r.get("user") == user)
            and (application_credential is None or r.get("application_credential") == application_credential)
        )

    # --- Cinder ----------------------------------------------------------------------------------------

    def cinder_config(self) -> dict[str, dict[str, str]]:
        """cinder.conf sections for ``auth_strategy = keystone`` (keystonemiddleware ``auth_token``)."""
        return {
            "DEFAULT": {"auth_strategy": "keystone"},
            "keystone_authtoken": {
                "www_authenticate_uri": self.auth_url,
                "auth_url": self.auth_url,
                "auth_type": "password",
                "username": "cinder",
                "password": CINDER_SERVICE_PASSWORD,
                "user_domain_id": "default",
                "project_name": "service",
                "project_domain_id": "default",
                "region_name": self.region,
                "service_token_roles_required": "true",
                # validate every request at Keystone: a revoked token is refused at once
                "token_cache_time": "-1",
                "http_connect_timeout": "5",
            },
        }

    def register_block_storage(self, port: int) -> None:
        """The ``block-storage`` service and its public / internal endpoints for Cinder on ``port``."""
        token = self.admin_token()
        service = _call(
            "POST",
            f"{self.auth_url}/services",
            token,
            {"service": {"type": "block-storage", "name": "cinderv3", "enabled": True}},
        )["service"]
        for interface, host in (("public", _LOCAL), ("internal", "localhost")):
            endpoint = {
                "service_id": service["id"],
                "interface": interface,
                "region_id": self.region,
                "url": f"http://{host}:{port}/v3/%(project_id)s",
                "enabled": True,
            }
            _call("POST", f"{self.auth_url}/endpoints", token, {"endpoint": endpoint})

    def clouds(self) -> dict[str, dict[str, Any]]:
        """clouds.yaml entries: ``keystone-password`` and ``keystone-appcred`` (public interface)."""
        common = {"region_name": self.region, "interface": "public", "identity_api_version": 3}
        return {
            "keystone-password": {
                **common,
                "auth_type": "password",
                "auth": {
                    "auth_url": self.auth_url,
                    "username": USER,
                    "password": PROVISIONER_PASSWORD,
                    "project_name": PROJECT,
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
            },
            "keystone-appcred": {
                **common,
                "auth_type": "v3applicationcredential",
                "auth": {
                    "auth_url": self.auth_url,
                    "application_credential_id": self.app_credential.id,
                    "application_credential_secret": self.app_credential.secret,
                },
            },
        }

    def write_clouds_yaml(self, path: Path) -> Path:
        """Write ``clouds()`` as a clouds.yaml (mode 0600: it holds secrets)."""
        path.write_text(yaml.safe_dump({"clouds": self.clouds()}, sort_keys=False))
        path.chmod(0o600)
        return path


# --- HTTP -----------------------------------------------------------------------------------------------


def _call(
    method: str,
    url: str,
    token: str | None,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - our own http:// URL
    req.add_header("Accept", "application/json")
    if token is not None:
        req.add_header("X-Auth-Token", token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - our own http:// URL
            raw = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:300]
        raise KeystoneError(f"keystone {method} {url}: HTTP {e.code} {detail}") from None
    return json.loads(raw) if raw else None


def _login(auth_url: str, body: Any) -> tuple[str, Any]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(f"{auth_url}/auth/tokens", data=data, method="POST")  # noqa: S310
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - our own http:// URL
            return str(resp.headers["X-Subject-Token"]), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise KeystoneError(f"keystone login refused: HTTP {e.code}") from None


# --- set-up ---------------------------------------------------------------------------------------------


def write_config(workdir: Path, *, token_expiration: int) -> Path:
    """keystone.conf: sqlite, fernet tokens, cheap password hashing; returns its path."""
    for sub in ("fernet-keys", "receipt-keys", "credential-keys"):
        repo = workdir / sub
        repo.mkdir(parents=True, exist_ok=True, mode=0o700)
        # what ``keystone-manage fernet_setup`` writes: a staged key (0) and a primary key (1)
        for index in ("0", "1"):
            key = repo / index
            if not key.exists():
                key.write_bytes(base64.urlsafe_b64encode(os.urandom(32)))
                key.chmod(0o600)
    text = f"""\
[DEFAULT]
use_stderr = true
debug = false

[database]
connection = sqlite:///{workdir / "keystone.sqlite"}

[token]
provider = fernet
expiration = {token_expiration}

[fernet_tokens]
key_repository = {workdir / "fernet-keys"}

[fernet_receipts]
key_repository = {workdir / "receipt-keys"}

[credential]
key_repository = {workdir / "credential-keys"}

[identity]
# bcrypt's minimum cost: every login hashes, and the tier logs in often (never do this in production)
password_hash_rounds = 4

[cache]
enabled = false

[oslo_policy]
enforce_new_defaults = true
enforce_scope = true
"""
    conf = workdir / "keystone.conf"
    conf.write_text(text)
    return conf


def _log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _wait_ready(
    proc: subprocess.Popen[bytes], ready_file: Path, log_path: Path, deadline: float
) -> dict[str, Any]:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KeystoneError(f"keystone exited with status {proc.returncode}:\n{_log_tail(log_path)}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            ready: dict[str, Any] = json.loads(ready_file.read_text())
            int(ready["port"])
            return ready
        time.sleep(0.05)
    raise KeystoneError(f"keystone did not listen in time:\n{_log_tail(log_path)}")


def _seed(app_credential_secret: str) -> dict[str, Any]:
    """What ``keystone_main`` creates before it serves (see the module docstring)."""
    return {
        "admin_password": ADMIN_PASSWORD,
        "projects": [PROJECT, "service"],
        "users": [
            {"name": USER, "password": PROVISIONER_PASSWORD, "project": PROJECT},
            {"name": "cinder", "password": CINDER_SERVICE_PASSWORD, "project": "service"},
        ],
        "grants": [
            {"user": USER, "project": PROJECT, "role": "member"},
            {"user": "cinder", "project": "service", "role": "service"},
            {"user": "admin", "project": PROJECT, "role": "admin"},
        ],
        "app_credential": {
            "user": USER,
            "project": PROJECT,
            "name": APP_CREDENTIAL_NAME,
            "secret": app_credential_secret,
        },
    }


@contextlib.contextmanager
def start_keystone(
    workdir: Path,
    *,
    token_expiration: int = 3600,
    region: str = REGION,
    startup_timeout: float = 90.0,
) -> Iterator[KeystoneHandle]:
    """Run real Keystone with the identities above; stop it on exit.

    ``token_expiration`` is Keystone's token lifetime in seconds. keystoneauth re-authenticates when a
    token has less than two minutes left, so a lifetime of ``120 + n`` gives tokens a useful life of ``n``
    seconds (the token-reuse tests rely on that).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    conf = write_config(workdir, token_expiration=token_expiration)
    log_path = workdir / "keystone.log"
    ready_file = workdir / "keystone-ready.json"
    ready_file.unlink(missing_ok=True)
    secret = secrets.token_urlsafe(24)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TESTWORLD_KEYSTONE_SEED": json.dumps(_seed(secret))}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "provisioner.testworld.real_cinder.keystone_main"),
                *("--ready-file", str(ready_file), "--config-file", str(conf), "--region", region),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
        )
    try:
        ready = _wait_ready(proc, ready_file, log_path, time.monotonic() + startup_timeout)
        yield KeystoneHandle(
            auth_url=f"http://{_LOCAL}:{int(ready['port'])}/v3",
            region=region,
            project_id=ready["projects"][PROJECT],
            user_id=ready["users"][USER],
            app_credential=AppCredential(id=ready["app_credential_id"], secret=secret),
            token_expiration=token_expiration,
            log_path=log_path,
            pid=proc.pid,
        )
    finally:
        _stop(proc)
