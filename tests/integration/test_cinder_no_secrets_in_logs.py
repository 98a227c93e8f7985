"""No secret reaches a log line: Keystone password, CHAP (session + discovery) passwords, cephx keyring.

Secrets are planted in the cloud configuration and in the connection info the emulator returns; the adapter
then does its normal work (login, create, attachments, legacy export, retries, failures) with structlog
captured and every stdlib logger (keystoneauth, cinderclient, urllib3) at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from provisioner.adapters.cinder.client import make_cinder
from provisioner.config.auth import cloud_from_entry
from provisioner.domain.errors import CinderAuthError, CinderError
from provisioner.domain.model import Connector, CreateVolumeRequest
from provisioner.testworld.cinder_emulator.conninfo import Profile
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator, IscsiProfile, RbdProfile

CHAP = "chap-Secret-4f1d"
DISCOVERY_CHAP = "disc-Secret-9a2b"
CEPHX_KEY = "AQBcephxSecretKey0000000000000000000000=="
KEYRING = f"[client.cinder]\n\tkey = {CEPHX_KEY}\n"
CONNECTOR = Connector(host="h", ip="127.0.0.1", initiator="iqn.2024-01.io.netvol:secrets")


@pytest.fixture
def emu() -> Iterator[CinderEmulator]:
    """An emulator whose connection info carries CHAP passwords and a cephx keyring."""
    profiles: dict[str, Profile] = {
        "iscsi": IscsiProfile(
            auth_method="CHAP",
            auth_username="chap-user",
            auth_password=CHAP,
            discovery_auth_method="CHAP",
            discovery_auth_username="disc-user",
            discovery_auth_password=DISCOVERY_CHAP,
        ),
        "rbd": RbdProfile(auth_enabled=True, auth_username="cinder", keyring=KEYRING),
    }
    with CinderEmulator(profiles=profiles) as e:
        yield e


def test_no_secret_in_any_log_line(emu: CinderEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """A full workload with failures logs nothing that contains a planted secret."""
    secrets = [emu.password, CHAP, DISCOVERY_CHAP, CEPHX_KEY]
    auth = {
        "auth_url": emu.keystone_url,
        "username": emu.username,
        "password": emu.password,
        "project_name": emu.project_name,
        "user_domain_name": "Default",
        "project_domain_name": "Default",
    }
    cloud = cloud_from_entry("s", {"auth_type": "password", "auth": auth}, prefix="t")
    bad_cloud = cloud_from_entry(
        "b", {"auth_type": "password", "auth": {**auth, "password": CHAP}}, prefix="t"
    )
    errors: list[str] = []
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        adapter = make_cinder(cloud, sleep=lambda _s: None)
        for volume_type in ("iscsi", "rbd"):
            volume = adapter.create_volume(
                CreateVolumeRequest(name=f"pvc-{volume_type}", size_gib=1, volume_type=volume_type)
            )
            attachment = adapter.create_attachment(volume.id, CONNECTOR)
            assert attachment.connection_info is not None
            adapter.complete_attachment(attachment.id)
            adapter.delete_attachment(attachment.id)
            adapter.reserve(volume.id)
            adapter.initialize_connection(volume.id, CONNECTOR)
            adapter.terminate_connection(volume.id, CONNECTOR)
            adapter.unreserve(volume.id)
            emu.faults.fail_next("get_volume", status=503)
            adapter.get_volume(volume.id)
            emu.faults.fail_next("create_attachment", status=500)
            with pytest.raises(CinderError) as info:
                adapter.create_attachment(volume.id, CONNECTOR)
            errors.append(str(info.value))
        with pytest.raises(CinderAuthError) as auth_info:
            make_cinder(bad_cloud).connect()
        errors.append(str(auth_info.value))
    lines = [repr(e) for e in events] + [r.getMessage() for r in caplog.records] + errors + [repr(cloud)]
    leaked = [s for s in secrets for line in lines if s in line]
    assert ([], True) == (leaked, len(events) > 0 and len(caplog.records) > 0)
