"""Launcher for real OpenStack Cinder (PyPI ``cinder``) all-in-one in one subprocess, for tests and sandbox.

Why: the Cinder emulator is only as good as its agreement with the real thing.  This starts unmodified
Cinder API + scheduler + volume in ONE child process (``fake:/`` messaging, ``noauth``, sqlite, file
coordination) over our file-backed test driver, so the adapter's contract suite and the e2e tests can run
against Cinder's real API, state machine, scheduler and attachment bookkeeping.

Cinder runs in a subprocess because it monkey-patches the interpreter with eventlet; it must never be
imported into the pytest process.  This module only writes files, starts the child, and talks HTTP.

Usage::

    with start_real_cinder(tmp_path) as cinder:
        client = cinderclient.client.Client("3.x", session=Session(auth=Token(cinder.url, cinder.token)))
        client.volumes.create(1, volume_type="rbd")

Backend profiles (each becomes an ``enabled_backends`` entry and a volume type of the same name, routed by
``volume_backend_name``): ``rbd``, ``rbd-cephx`` (cephx user + keyring in the connection info), ``iscsi``,
``iscsi-chap`` (session and discovery CHAP), ``iscsi-multipath`` (two portals when the connector asks),
``iscsi-tgt`` (exported through a real tgtd by Cinder's own TgtAdm; see ``real_cinder.tgt``),
and ``ceph``: Cinder's own RBD driver on a real throwaway Ceph cluster (``ceph=`` a running
``real_cinder.ceph.CephCluster``; the child then imports Debian's rados/rbd bindings).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from provisioner.domain.errors import ProvisionerError
from provisioner.testworld.real_cinder import ceph as ceph_mod
from provisioner.testworld.real_cinder.keystone import KeystoneHandle

#: Test-only credentials the ``*-chap`` / ``*-cephx`` backends hand out (tests plant and look for them).
CHAP_USERNAME = "chap-user"
CHAP_PASSWORD = "chap-secret-1234"
DISCOVERY_CHAP_USERNAME = "disc-user"
DISCOVERY_CHAP_PASSWORD = "disc-secret-5678"
CEPHX_USER = "cinder"
CEPHX_KEY = "AQBzZXJ2ZXJzZWNyZXRrZXlmb3J0ZXN0czAwMDAwMA=="

_DRIVER = "provisioner.testworld.real_cinder.file_driver.FileVolumeDriver"
_TGT_DRIVER = "provisioner.testworld.real_cinder.tgt_driver.TgtFileVolumeDriver"
#: The backend profile that is Cinder's own RBD driver on a real Ceph cluster.
CEPH_BACKEND = "ceph"
_LOCAL = "127.0.0.1"


def _backend_options(profile: str, workdir: Path) -> dict[str, str]:
    """Driver options of one backend profile (see the module docstring)."""
    options: dict[str, str]
    if profile == "rbd":
        options = {"file_connection_type": "rbd"}
    elif profile == "rbd-cephx":
        options = {
            "file_connection_type": "rbd",
            "file_rbd_user": CEPHX_USER,
            "file_rbd_keyring_file": str(workdir / "ceph.client.cinder.keyring"),
        }
    elif profile == "iscsi":
        options = {"file_connection_type": "iscsi"}
    elif profile == "iscsi-chap":
        options = {
            "file_connection_type": "iscsi",
            "use_chap_auth": "true",
            "chap_username": CHAP_USERNAME,
            "chap_password": CHAP_PASSWORD,
            "file_discovery_chap_username": DISCOVERY_CHAP_USERNAME,
            "file_discovery_chap_password": DISCOVERY_CHAP_PASSWORD,
        }
    elif profile == "iscsi-multipath":
        options = {"file_connection_type": "iscsi", "file_iscsi_portals": "127.0.0.1:3260,127.0.0.2:3260"}
    elif profile == "iscsi-tgt":  # a real tgtd: pass extra_config=tgt.TgtHandle.cinder_backend_config()
        options = {"file_connection_type": "iscsi", "volume_driver": _TGT_DRIVER}
    else:
        known = "rbd, rbd-cephx, iscsi, iscsi-chap, iscsi-multipath, iscsi-tgt"
        raise ValueError(f"unknown real-Cinder backend {profile!r}; known: {known}")
    return {
        "volume_driver": _DRIVER,
        "volume_backend_name": profile,
        "file_volumes_dir": str(workdir / "volumes" / profile),
        **options,
    }


class RealCinderError(ProvisionerError):
    """Real Cinder did not start (or answered an unexpected way); the message ends with the log tail."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RealCinderHandle:
    """How to reach the running Cinder: ``url`` is the v3 endpoint including the project id."""

    url: str
    project_id: str
    token: str
    volume_types: dict[str, str]
    log_path: Path
    pid: int


# --- files ----------------------------------------------------------------------------------------------

_MINIMAL_PASTE = """\
[composite:osapi_volume]
use = call:cinder.api:root_app_factory
/: apiversions
/v3: openstack_volume_api_v3

[composite:openstack_volume_api_v3]
use = call:cinder.api.middleware.auth:pipeline_factory
noauth = request_id faultwrap sizelimit noauth apiv3

[filter:request_id]
paste.filter_factory = cinder.api.middleware.request_id:RequestId.factory

[filter:faultwrap]
paste.filter_factory = cinder.api.middleware.fault:FaultWrapper.factory

[filter:sizelimit]
paste.filter_factory = oslo_middleware.sizelimit:RequestBodySizeLimiter.factory

[filter:noauth]
paste.filter_factory = cinder.api.middleware.auth:NoAuthMiddleware.factory

[app:apiv3]
paste.app_factory = cinder.api.v3.router:APIRouter.factory

[pipeline:apiversions]
pipeline = request_id faultwrap osvolumeversionapp

[app:osvolumeversionapp]
paste.app_factory = cinder.api.versions:Versions.factory
"""


def _shipped_file(name: str) -> Path | None:
    """A file the cinder wheel installs under ``<prefix>/etc/cinder/`` (api-paste.ini, resource filters)."""
    try:
        files = metadata.distribution("cinder").files or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.as_posix().endswith(f"etc/cinder/{name}"):
            path = Path(str(entry.locate())).resolve()
            if path.is_file():
                return path
    return None


def _ini(sections: Mapping[str, Mapping[str, str]]) -> str:
    lines: list[str] = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in options.items())
        lines.append("")
    return "\n".join(lines)


def write_config(
    workdir: Path,
    *,
    backends: Sequence[str],
    port: int,
    extra_config: Mapping[str, Mapping[str, str]] | None = None,
    ceph: ceph_mod.CephCluster | None = None,
) -> Path:
    """Write cinder.conf, api-paste.ini (and keyrings) into ``workdir``; returns the cinder.conf path.

    ``extra_config`` adds or overrides options, per section (``{"DEFAULT": {"report_interval": "1"}}``).
    """
    for sub in ("state", "locks", "coordination", "volumes", "backups"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    shipped_paste = _shipped_file("api-paste.ini")
    paste = shipped_paste.read_text() if shipped_paste else _MINIMAL_PASTE
    (workdir / "api-paste.ini").write_text(paste)
    (workdir / "ceph.client.cinder.keyring").write_text(f"[client.{CEPHX_USER}]\n\tkey = {CEPHX_KEY}\n")
    default: dict[str, str] = {
        "transport_url": "fake:/",
        "auth_strategy": "noauth",
        "host": "cinder-real",
        "my_ip": _LOCAL,
        "osapi_volume_listen": _LOCAL,
        "osapi_volume_listen_port": str(port),
        "osapi_volume_workers": "1",
        "api_paste_config": str(workdir / "api-paste.ini"),
        "state_path": str(workdir / "state"),
        "enabled_backends": ",".join(backends),
        "default_volume_type": backends[0],
        "use_stderr": "true",
        "debug": "false",
        "periodic_fuzzy_delay": "0",
        "scheduler_driver_init_wait_time": "1",
        "quota_volumes": "-1",
        "quota_snapshots": "-1",
        "quota_gigabytes": "-1",
        "quota_backups": "-1",
        "quota_backup_gigabytes": "-1",
        # cinder-backup in the same process, writing backups as files (cinder.backup.drivers.posix)
        "backup_driver": "cinder.backup.drivers.posix.PosixBackupDriver",
        "backup_posix_path": str(workdir / "backups"),
        "backup_file_size": str(64 * 1024 * 1024),
        "backup_sha_block_size_bytes": str(1024 * 1024),
        "backup_compression_algorithm": "zlib",
    }
    filters = _shipped_file("resource_filters.json")
    if filters:
        default["resource_query_filters_file"] = str(filters)
    sections: dict[str, Mapping[str, str]] = {
        "DEFAULT": default,
        "database": {"connection": f"sqlite:///{workdir / 'cinder.sqlite'}"},
        "coordination": {"backend_url": f"file://{workdir / 'coordination'}"},
        "oslo_concurrency": {"lock_path": str(workdir / "locks")},
        "oslo_messaging_notifications": {"driver": "noop"},
    }
    for profile in backends:
        if profile == CEPH_BACKEND:
            if ceph is None:
                raise ValueError("the 'ceph' backend needs a running cluster (ceph=start_ceph(...))")
            sections[profile] = ceph_mod.cinder_backend_options(ceph, profile)
        else:
            sections[profile] = _backend_options(profile, workdir)
    for section, options in (extra_config or {}).items():
        sections[section] = {**sections.get(section, {}), **options}
    conf = workdir / "cinder.conf"
    conf.write_text(_ini(sections))
    return conf


# --- HTTP -----------------------------------------------------------------------------------------------


def _request(method: str, url: str, token: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - our own http:// URL
    req.add_header("X-Auth-Token", token)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our own http:// URL
        raw = resp.read()
    return json.loads(raw) if raw else None


# --- process --------------------------------------------------------------------------------------------


def _log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, then SIGKILL; always reaps it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, if any
    proc.wait()


class _Starter:
    """The start-up steps; each waits with a deadline and fails with the log tail."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, deadline: float) -> None:
        self.proc = proc
        self.log_path = log_path
        self.deadline = deadline

    def fail(self, what: str) -> RealCinderError:
        return RealCinderError(
            f"real Cinder {what}; last log lines of {self.log_path}:\n{_log_tail(self.log_path)}"
        )

    def poll_until(self, what: str, probe: Any) -> Any:
        last: Exception | None = None
        while time.monotonic() < self.deadline:
            if self.proc.poll() is not None:
                raise self.fail(f"exited with status {self.proc.returncode} while waiting for {what}")
            try:
                result = probe()
            except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
                last = e
                result = None
            if result:
                return result
            time.sleep(0.1)
        raise self.fail(f"not ready in time: {what} (last error: {last!r})")


def _services_up(url: str, token: str, backends: Sequence[str]) -> bool:
    services = _request("GET", f"{url}/os-services", token)["services"]
    up = {(s["binary"], s["host"]) for s in services if s["state"] == "up" and s["status"] == "enabled"}
    wanted = {("cinder-volume", f"cinder-real@{b}") for b in backends} | {
        ("cinder-scheduler", "cinder-real"),
        ("cinder-backup", "cinder-real"),
    }
    return wanted <= up


def _pools_known(url: str, token: str, backends: Sequence[str]) -> bool:
    pools = _request("GET", f"{url}/scheduler-stats/get_pools", token)["pools"]
    names = {p["name"] for p in pools}
    return all(f"cinder-real@{b}#{b}" in names for b in backends)


def _create_types(url: str, token: str, backends: Sequence[str]) -> dict[str, str]:
    types: dict[str, str] = {}
    for profile in backends:
        body = {"volume_type": {"name": profile, "extra_specs": {"volume_backend_name": profile}}}
        created = _request("POST", f"{url}/types", token, body)["volume_type"]
        types[profile] = created["id"]
    return types


def _merged(
    base: Mapping[str, Mapping[str, str]], more: Mapping[str, Mapping[str, str]]
) -> dict[str, Mapping[str, str]]:
    merged: dict[str, Mapping[str, str]] = dict(base)
    for section, options in more.items():
        merged[section] = {**merged.get(section, {}), **options}
    return merged


@contextlib.contextmanager
def start_real_cinder(
    workdir: Path,
    *,
    backends: Sequence[str] = ("rbd", "iscsi"),
    port: int = 0,
    startup_timeout: float = 90.0,
    extra_config: Mapping[str, Mapping[str, str]] | None = None,
    ceph: ceph_mod.CephCluster | None = None,
    keystone: KeystoneHandle | None = None,
) -> Iterator[RealCinderHandle]:
    """Run real Cinder all-in-one with one backend (and volume type) per profile; stop it on exit.

    ``port`` 0 lets the API pick a free port.  ``extra_config`` adds/overrides cinder.conf options.
    Raises ``RealCinderError`` (with the log tail) when Cinder does not come up within ``startup_timeout``.
    ``keystone`` (a running ``real_cinder.keystone`` Keystone): ``auth_strategy = keystone`` against it, the
    handle's project is Keystone's ``k8s`` and its token a real admin token there, and Cinder's endpoints
    are registered in Keystone's catalog once the API listens.
    """
    if keystone is not None:
        extra_config = _merged(keystone.cinder_config(), extra_config or {})
    if not backends:
        raise ValueError("at least one backend profile is needed")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    conf = write_config(workdir, backends=backends, port=port, extra_config=extra_config, ceph=ceph)
    project_id = uuid.uuid4().hex if keystone is None else keystone.project_id
    token = f"admin:{project_id}" if keystone is None else keystone.admin_token()
    log_path = workdir / "cinder.log"
    ready_file = workdir / "cinder-ready.json"
    ready_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OS_CINDER_DISABLE_EVENTLET_PATCHING": ""}
    if ceph is not None:  # Cinder's RBD driver imports rados / rbd (Debian's, for this CPython)
        paths = [str(ceph_mod.bindings_dir(workdir)), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "provisioner.testworld.real_cinder.main"),
                *("--ready-file", str(ready_file), "--config-file", str(conf)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    try:
        starter = _Starter(proc, log_path, time.monotonic() + startup_timeout)
        ready = starter.poll_until("the API to listen", lambda: json.loads(ready_file.read_text()))
        url = f"http://{_LOCAL}:{int(ready['port'])}/v3/{project_id}"
        if keystone is not None:
            keystone.register_block_storage(int(ready["port"]))
        starter.poll_until(
            "cinder-volume and cinder-scheduler up", lambda: _services_up(url, token, backends)
        )
        starter.poll_until("the scheduler to know every pool", lambda: _pools_known(url, token, backends))
        try:
            volume_types = _create_types(url, token, backends)
        except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
            raise starter.fail(f"refused to create volume types ({e!r})") from e
        yield RealCinderHandle(
            url=url,
            project_id=project_id,
            token=token,
            volume_types=volume_types,
            log_path=log_path,
            pid=proc.pid,
        )
    finally:
        _stop(proc)
