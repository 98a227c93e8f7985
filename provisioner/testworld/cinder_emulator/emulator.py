"""An in-process OpenStack Cinder (Block Storage v3) and Keystone v3 emulator over real HTTP.

Why: the provisioner's Cinder adapter must be exercised through the real python-cinderclient and
keystoneauth1, fast enough to push a thousand volumes through in a benchmark, with failures a real cloud
produces only by accident (5xx, 429 with Retry-After, 413 quotas, volumes going to ``error``, stuck
``creating``, latency). The contract suite in ``tests/contract`` runs the same tests against this emulator
and against real Cinder; any difference is an emulator bug.

Usage::

    with CinderEmulator(max_version="3.71") as emu:
        emu.keystone_url   # http://127.0.0.1:PORT/identity/v3   (password / application credential)
        emu.cinder_url     # http://127.0.0.1:PORT/v3/<project_id>  (catalog endpoint)
        emu.faults.fail_next("get_volume", status=503)
        emu.volumes()      # inspection

Standalone: ``python -m provisioner.testworld.cinder_emulator.emulator --port 8776`` prints its endpoints.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from provisioner.testworld.cinder_emulator.conninfo import (
    DEFAULT_PROFILES,
    IscsiProfile,
    OtherProfile,
    Profile,
    RbdProfile,
)
from provisioner.testworld.cinder_emulator.faults import Faults
from provisioner.testworld.cinder_emulator.http import CallRecord, Handler, Identity, Server
from provisioner.testworld.cinder_emulator.state import Quota, Timing
from provisioner.testworld.cinder_emulator.store import Store

__all__ = [
    "CallRecord",
    "CinderEmulator",
    "Faults",
    "IscsiProfile",
    "OtherProfile",
    "Quota",
    "RbdProfile",
    "Timing",
]


class CinderEmulator:
    """Keystone v3 + Cinder v3 on ``127.0.0.1:<ephemeral>``; start/stop or use as a context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_version: str = "3.71",
        create_seconds: float = 0.0,
        delete_seconds: float = 0.0,
        extend_seconds: float = 0.0,
        snapshot_seconds: float = 0.0,
        backup_seconds: float = 0.0,
        restore_seconds: float = 0.0,
        profiles: Mapping[str, Profile] | None = None,
        quota: Quota | None = None,
        page_size_max: int = 1000,
        allow_noauth_tokens: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        major, _, minor = max_version.partition(".")
        self.faults = Faults(clock=clock)
        self.project_id = secrets.token_hex(16)
        self.project_name = "kubernetes"
        self.username = "provisioner"
        self.password = "pw-" + secrets.token_hex(12)
        self.app_credential_id = secrets.token_hex(16)
        self.app_credential_secret = "ac-" + secrets.token_hex(12)
        self.timing = Timing(
            create_seconds=create_seconds,
            delete_seconds=delete_seconds,
            extend_seconds=extend_seconds,
            snapshot_seconds=snapshot_seconds,
            backup_seconds=backup_seconds,
            restore_seconds=restore_seconds,
        )
        self.quota = quota or Quota()
        self._store = Store(
            project_id=self.project_id,
            profiles={**DEFAULT_PROFILES, **(profiles or {})},
            timing=self.timing,
            quota=self.quota,
            faults=self.faults,
            clock=clock,
        )
        identity = Identity(
            project_id=self.project_id,
            project_name=self.project_name,
            username=self.username,
            password=self.password,
            app_cred_id=self.app_credential_id,
            app_cred_secret=self.app_credential_secret,
            allow_noauth_tokens=allow_noauth_tokens,
            tokens=set(),
        )
        self._server = Server(
            store=self._store, faults=self.faults, identity=identity, max_version=(int(major), int(minor))
        )
        self._server.max_limit = page_size_max
        self._bind = (host, port)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> CinderEmulator:
        """Bind and serve in a daemon thread; returns self."""
        handler = type("BoundHandler", (Handler,), {"emu": self._server})
        httpd = ThreadingHTTPServer(self._bind, handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        host, port = httpd.server_address[:2]
        self._server.base_url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="cinder-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> CinderEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- endpoints -------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (after start)."""
        if not self._server.base_url:
            raise RuntimeError("CinderEmulator is not started")
        return self._server.base_url

    @property
    def keystone_url(self) -> str:
        """Keystone v3 auth URL for keystoneauth1 (``auth_url``)."""
        return f"{self.base_url}/identity/v3"

    @property
    def cinder_url(self) -> str:
        """The Block Storage endpoint the catalog advertises (with the project id)."""
        return f"{self.base_url}/v3/{self.project_id}"

    @property
    def noauth_token(self) -> str:
        """A token Cinder's noauth mode would accept: ``<user>:<project_id>``."""
        return f"admin:{self.project_id}"

    @property
    def volume_types(self) -> dict[str, str]:
        """Volume type name → id."""
        return dict(self._store.types)

    # --- inspection --------------------------------------------------------------------------------------

    def volumes(self) -> list[dict[str, Any]]:
        """Every volume as the API shows it (statuses settled at the current time)."""
        return self._store.dump()["volumes"]

    def snapshots(self) -> list[dict[str, Any]]:
        """Every snapshot as the API shows it."""
        return self._store.dump()["snapshots"]

    def backups(self) -> list[dict[str, Any]]:
        """Every backup as the API shows it (with metadata)."""
        return self._store.dump()["backups"]

    @property
    def backup_service_up(self) -> bool:
        """Whether the cinder-backup service is up (set False: backups and restores fail like Cinder's)."""
        return self._store.backup_service_up

    @backup_service_up.setter
    def backup_service_up(self, up: bool) -> None:
        self._store.backup_service_up = up

    def content(self, volume_id: str) -> str | None:
        """The volume's content marker (copied by snapshots, clones, backups and restores)."""
        return self._store.content(volume_id)

    def write_content(self, volume_id: str, marker: str) -> None:
        """Put a content marker on the volume, as a workload writing to it would."""
        self._store.write_content(volume_id, marker)

    def attachments(self) -> list[dict[str, Any]]:
        """Every attachment, including the connector it was created with."""
        return self._store.dump()["attachments"]

    def calls(self) -> list[CallRecord]:
        """Every request answered so far, in order."""
        with self._server.lock:
            return list(self._server.calls)

    def clear_calls(self) -> None:
        """Forget the call log (and the in-flight high-water mark)."""
        with self._server.lock:
            self._server.calls.clear()
            self._server.max_in_flight_seen = 0

    @property
    def max_in_flight_seen(self) -> int:
        """The most Block Storage/Keystone requests that were being served at one moment."""
        return self._server.max_in_flight_seen


def main(argv: list[str] | None = None) -> int:
    """Run the emulator in the foreground and print how to reach it."""
    parser = argparse.ArgumentParser(prog="cinder-emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-version", default="3.71")
    parser.add_argument("--create-seconds", type=float, default=0.5)
    args = parser.parse_args(argv)
    emu = CinderEmulator(
        host=args.host, port=args.port, max_version=args.max_version, create_seconds=args.create_seconds
    ).start()
    print(f"keystone: {emu.keystone_url}  user: {emu.username}  password: {emu.password}")
    print(f"cinder:   {emu.cinder_url}  noauth token: {emu.noauth_token}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
