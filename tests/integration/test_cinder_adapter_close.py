"""A stopped replica gives its sockets back: ``CinderAdapter.close`` and ``Replica`` shutdown.

Found by a 1,000-cycle chaos run: every crashed replica kept its Cinder connections open, until the process
passed 1,024 descriptors and the simulator's ``select()`` failed. Counted here from ``/proc/self/fd``.
"""

from __future__ import annotations

import os
import time

from kubernetes import client as k8s

from provisioner.adapters.cinder.client import make_cinder
from provisioner.config.settings import ProvisionerConfig
from provisioner.runtime.replica import Replica
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from provisioner.testworld.objects import emulator_cloud
from tests.integration.test_cinder_adapter_faults import password_cloud


def replica_config(emu: CinderEmulator, cluster_id: str, **settings: object) -> ProvisionerConfig:
    """A replica's configuration for one emulator cloud, without leader election (plus ``settings``)."""
    return ProvisionerConfig.from_mapping(
        {
            "cluster_id": cluster_id,
            "clouds": {
                "default": emulator_cloud(emu.keystone_url, emu.username, emu.password, emu.project_id)
            },
            "default_cloud": "default",
            "namespace": "kube-system",
            "secret_namespace": "kube-system",
            "leader_election": {"enabled": False},
            **settings,
        }
    )


def open_sockets() -> int:
    """Sockets this process holds open."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return n


def settle(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_close_releases_the_pooled_connections() -> None:
    """After calls, the adapter holds connections; after close, the process holds none of them."""
    with CinderEmulator() as emu:
        before = open_sockets()
        adapter = make_cinder(password_cloud(emu))
        adapter.connect()
        list(adapter.list_volumes(metadata={}))
        assert open_sockets() > before  # keep-alive: client ends (and the server's) stay open
        adapter.close()
        assert settle(lambda: open_sockets() <= before)


def test_stopped_replicas_do_not_keep_cinder_sockets() -> None:
    """Ten replicas that each talked to Cinder and stopped leave no more sockets than one would."""
    with CinderEmulator() as emu:
        config = replica_config(emu, "close")
        before = open_sockets()
        for i in range(10):
            replica = Replica(
                config,
                client_configuration=k8s.Configuration(host="http://127.0.0.1:9"),
                identity=f"r{i}",
            )
            for cinder in replica.controller.ctx.clouds.values():
                list(cinder.list_volumes(metadata={}))  # a pooled connection now exists
            replica.terminate(timeout=1.0)
        assert settle(lambda: open_sockets() <= before + 2)
