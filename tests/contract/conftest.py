"""Backends for the Cinder contract suite: the emulator (always) and real Cinder (``tox -e cinder-real``).

The same tests run against both through the real adapter (python-cinderclient over keystoneauth1). On the
emulator the adapter logs in through the emulator's Keystone with password auth; on real Cinder it uses the
no-auth mode (explicit endpoint + ``admin:<project_id>`` token), which is how real Cinder runs here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provisioner.adapters.cinder.client import CinderAdapter, make_cinder
from provisioner.config.auth import CloudConfig, cloud_from_entry
from provisioner.domain.errors import CinderNotFound
from provisioner.domain.model import Volume, VolumeId
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator


@dataclass
class CinderWorld:
    """One backend as the suite sees it."""

    kind: str
    cloud: CloudConfig
    adapter: CinderAdapter
    cluster: str

    def make_adapter(self, **tuning: Any) -> CinderAdapter:
        """Another adapter for the same cloud with different tuning (page size …)."""
        return make_cinder(self.cloud, max_in_flight=4, **tuning)

    def wait_for(self, what: str, probe: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll ``probe`` until true (tests may wait; the controller never does)."""
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def wait_status(self, volume_id: VolumeId, status: str, timeout: float = 60.0) -> Volume:
        """Poll get_volume until the volume reaches ``status``."""
        seen: list[Volume] = []

        def reached() -> bool:
            seen.append(self.adapter.get_volume(volume_id))
            return seen[-1].status == status

        self.wait_for(
            f"volume {volume_id} to be {status} (last: {seen[-1].status if seen else '?'})", reached, timeout
        )
        return seen[-1]

    def wait_gone(self, volume_id: VolumeId, timeout: float = 60.0) -> None:
        """Poll until get_volume raises CinderNotFound."""

        def gone() -> bool:
            try:
                self.adapter.get_volume(volume_id)
            except CinderNotFound:
                return True
            return False

        self.wait_for(f"volume {volume_id} to disappear", gone, timeout)

    def unique(self, prefix: str = "pvc") -> str:
        """A name no other test uses."""
        return f"{prefix}-{uuid.uuid4()}"


def _world(kind: str, cloud: CloudConfig) -> CinderWorld:
    adapter = make_cinder(cloud, max_in_flight=8)
    return CinderWorld(kind=kind, cloud=cloud, adapter=adapter, cluster=f"contract-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def emulator_world() -> Iterator[CinderWorld]:
    """The emulator with a little asynchrony, logged into through its Keystone."""
    with CinderEmulator(create_seconds=0.05, delete_seconds=0.05, extend_seconds=0.05) as emu:
        cloud = cloud_from_entry(
            "emulator",
            {
                "auth_type": "password",
                "auth": {
                    "auth_url": emu.keystone_url,
                    "username": emu.username,
                    "password": emu.password,
                    "project_name": emu.project_name,
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": "RegionOne",
            },
            prefix="contract",
        )
        yield _world("emulator", cloud)


@pytest.fixture(scope="session")
def real_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CinderWorld]:
    """Real OpenStack Cinder (PyPI ``cinder``) in a subprocess, reached in no-auth mode."""
    from provisioner.testworld.real_cinder.launcher import start_real_cinder

    workdir: Path = tmp_path_factory.mktemp("real-cinder")
    with start_real_cinder(workdir, backends=("rbd", "iscsi")) as handle:
        cloud = cloud_from_entry(
            "real",
            {"auth_type": "noauth", "auth": {"endpoint": handle.url, "token": handle.token}},
            prefix="contract",
        )
        yield _world("real", cloud)


@pytest.fixture(params=["emulator", pytest.param("real", marks=pytest.mark.cinder_real)])
def cinder(request: pytest.FixtureRequest) -> CinderWorld:
    """The backend under test."""
    world: CinderWorld = request.getfixturevalue(f"{request.param}_world")
    return world
