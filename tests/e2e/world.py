"""The whole provisioning system on loopback: Kubernetes simulator + Cinder (emulator or real) + a replica.

Everything talks over real HTTP with the official clients. Tests get a ``World`` with helpers to create
classes and claims, wait for conditions, and inspect what the controller wrote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from provisioner.adapters.kube import KubeAdapter
from provisioner.config.settings import ProvisionerConfig
from provisioner.domain import names
from provisioner.runtime.replica import Replica
from provisioner.testworld import objects
from provisioner.testworld.kube_sim import KubeSimulator

FAST = {"poll_initial_seconds": 0.05, "poll_max_seconds": 0.5}


def config_for(cloud: Mapping[str, Any], **over: Any) -> ProvisionerConfig:
    data: dict[str, Any] = {
        "cluster_id": "e2e",
        "clouds": {"default": dict(cloud)},
        "default_cloud": "default",
        "namespace": "kube-system",
        "secret_namespace": "kube-system",
        "workers": 4,
        "leader_election": {"lease_duration": 4, "renew_deadline": 3, "retry_period": 1},
    }
    data.update(over)
    return ProvisionerConfig.from_mapping(data)


@dataclass
class World:
    sim: KubeSimulator
    cloud: dict[str, Any]
    kube: KubeAdapter
    stack: ExitStack
    emu: Any = None
    replicas: list[Replica] = field(default_factory=list)

    def start_replica(
        self, identity: str = "r0", config: ProvisionerConfig | None = None, **settings: float
    ) -> Replica:
        replica = Replica(
            config or config_for(self.cloud),
            client_configuration=self.sim.configuration(),
            identity=identity,
            resync_seconds=30.0,
            watch_timeout_seconds=20,
            **{**FAST, **settings},
        )
        replica.start()
        self.replicas.append(replica)
        self.stack.callback(replica.terminate)
        assert replica.leading.wait(15), "replica did not become leader"
        return replica

    def stop_replicas(self) -> None:
        """Terminate every replica (flushes their events) before the world is inspected."""
        for replica in self.replicas:
            replica.terminate()

    @property
    def cinder(self) -> Any:
        return next(iter(self.replicas[0].controller.ctx.clouds.values()))

    def create_class(
        self,
        name: str,
        parameters: Mapping[str, str],
        *,
        reclaim: str = "Delete",
        binding: str = "Immediate",
        mount_options: list[str] | None = None,
    ) -> dict[str, Any]:
        body = objects.storage_class(
            name, parameters, reclaim=reclaim, binding=binding, mount_options=mount_options
        )
        return self.kube.create("storageclasses", body)

    def create_pvc(
        self,
        name: str,
        storage_class: str,
        *,
        size: str = "1Gi",
        namespace: str = "default",
        annotations: Mapping[str, str] | None = None,
        access: str = "ReadWriteOnce",
        data_source: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        body = objects.claim(
            name,
            storage_class,
            size=size,
            namespace=namespace,
            access=access,
            annotations=annotations,
            data_source=data_source,
        )
        return self.kube.create("persistentvolumeclaims", body, namespace=namespace)

    def pvc(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.sim.get("persistentvolumeclaims", namespace, name)

    def pv_of(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        pvc = self.pvc(name, namespace)
        return (
            self.sim.get("persistentvolumes", "", names.pv_name_for(pvc["metadata"]["uid"])) if pvc else None
        )

    def wait_bound(self, name: str, namespace: str = "default", timeout: float = 20.0) -> dict[str, Any]:
        wait_for(
            lambda: ((self.pvc(name, namespace) or {}).get("status") or {}).get("phase") == "Bound",
            timeout,
            f"{namespace}/{name} Bound",
        )
        pvc = self.pvc(name, namespace)
        assert pvc is not None
        return pvc

    def events_for(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.sim.list("events") if e["involvedObject"].get("name") == name]

    def our_volumes(self) -> list[Any]:
        return list(self.cinder.list_volumes(metadata={names.META_CLUSTER: "e2e"}))


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def emulator_world(*, sim_kwargs: Mapping[str, Any] | None = None, **emu_kwargs: Any) -> Iterator[World]:
    from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
    from provisioner.testworld.objects import emulator_cloud

    with ExitStack() as stack:
        sim = stack.enter_context(KubeSimulator(**dict(sim_kwargs or {})))
        emu = stack.enter_context(
            CinderEmulator(**{"create_seconds": 0.1, "delete_seconds": 0.05, **emu_kwargs})
        )
        cloud = emulator_cloud(emu.keystone_url, emu.username, emu.password, emu.project_id)
        kube = KubeAdapter(sim.configuration(), qps=500, burst=500)
        stack.callback(kube.close)
        world = World(sim=sim, cloud=cloud, kube=kube, stack=stack, emu=emu)
        yield world
        world.stop_replicas()
        assert_written_objects_valid(sim)


KINDS = {"persistentvolumes": "PersistentVolume", "secrets": "Secret", "events": "Event"}


def assert_written_objects_valid(sim: KubeSimulator) -> None:
    """Every PV, Secret and Event in the simulator is valid for Kubernetes 1.29 and the newest schema."""
    from tests.k8s_schema import assert_valid

    for resource, kind in KINDS.items():
        for obj in sim.list(resource):
            obj.setdefault("apiVersion", "v1")
            obj.setdefault("kind", kind)
            assert_valid(obj)
