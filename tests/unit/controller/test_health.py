"""Liveness and readiness: a dead or stuck worker pool, or a dead watch loop, fails /healthz (real HTTP)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client as k8s
from structlog.testing import capture_logs

from provisioner.adapters.health import HealthServer
from provisioner.config.settings import ProvisionerConfig
from provisioner.domain.outcome import DONE, Outcome
from provisioner.runtime.replica import Replica
from provisioner.testworld.objects import emulator_cloud
from tests.unit.controller.rig import Rig, make_rig


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` (for what another thread does, e.g. a log line)."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return True
        tick.wait(0.02)
    return condition()


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.fixture
def served() -> Iterator[Callable[[Rig], int]]:
    """Serve a rig's controller the way the replica wires it; returns the port."""
    servers: list[HealthServer] = []

    def serve(rig: Rig) -> int:
        server = HealthServer(
            host="127.0.0.1",
            port=0,
            registry=rig.metrics.registry,
            ready=lambda: rig.controller.synced,
            liveness=rig.controller.liveness_problem,
        )
        server.start()
        servers.append(server)
        return server.port

    yield serve
    for server in servers:
        server.stop()


def running(rig: Rig) -> Rig:
    rig.start()
    assert rig.controller.wait_synced(5.0)
    rig.controller.start_workers()
    return rig


def test_healthz_fails_when_the_worker_pool_died(served: Callable[[Rig], int]) -> None:
    """Every worker thread ended while the controller runs: /healthz 500 naming the dead workers."""
    rig = running(make_rig(workers=2))
    port = served(rig)
    try:
        assert (200, "ok") == get(port, "/healthz")
        rig.controller.queue.shutdown()  # the workers' loops end, the controller was not stopped
        for t in rig.controller._threads:
            t.join(5.0)
        status, body = get(port, "/healthz")
        assert 500 == status
        assert "unhealthy: 2 of 2 worker threads died (worker-0, worker-1)" == body
        assert 0.0 == rig.sample("cinder_provisioner_workers_alive")
    finally:
        rig.stop()


def test_healthz_fails_when_a_worker_is_stuck_in_one_step(served: Callable[[Rig], int]) -> None:
    """A worker inside one step for longer than the bound: /healthz 500; healthy again once it returns."""
    rig = make_rig(workers=1, stuck_after_seconds=300.0)
    entered, release = threading.Event(), threading.Event()

    def hang(key: str) -> Outcome:
        entered.set()
        release.wait(10.0)
        return DONE

    rig.claims.default = hang
    running(rig)
    port = served(rig)
    try:
        rig.controller.queue.add(("claim", "default/data"))
        assert entered.wait(5.0)
        rig.clock.advance(300.0)
        assert (200, "ok") == get(port, "/healthz")
        rig.clock.advance(1.0)
        status, body = get(port, "/healthz")
        assert (500, "unhealthy: worker-0 stuck for 301 s in one step of claim:default/data") == (
            status,
            body,
        )
        release.set()
        rig.controller.queue.add(("claim", "default/other"))  # the worker is back for the next key
        assert entered.wait(5.0)
    finally:
        release.set()
        rig.stop()


def test_healthz_fails_when_a_watch_loop_died(served: Callable[[Rig], int]) -> None:
    """An informer whose list+watch thread ended (not stopped): /healthz 500 naming the resource."""
    rig = running(make_rig(workers=1))
    port = served(rig)
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    alive = rig.controller.pvs._thread
    try:
        rig.controller.pvs._thread = dead  # what an informer thread killed by a BaseException leaves
        assert (500, "unhealthy: informer persistentvolumes: watch loop died") == get(port, "/healthz")
    finally:
        rig.controller.pvs._thread = alive
        rig.stop()


def test_a_standby_without_workers_is_healthy_and_ready(served: Callable[[Rig], int]) -> None:
    """Informers synced, no workers (not leader): /healthz ok, /readyz ok."""
    rig = make_rig()
    rig.start()
    port = served(rig)
    try:
        assert rig.controller.wait_synced(5.0)
        assert (200, "ok") == get(port, "/healthz")
        assert 200 == get(port, "/readyz")[0]
        assert [] == rig.controller._threads
    finally:
        rig.stop()


def test_a_stopping_controller_is_not_reported_dead() -> None:
    """After stop() the ended workers are expected: no liveness problem."""
    rig = running(make_rig(workers=2))
    rig.stop()
    assert rig.controller.liveness_problem() is None


def test_start_workers_refuses_unsynced_caches() -> None:
    """start_workers before the caches synced raises instead of running on empty caches."""
    rig = make_rig(open_gate=False)
    with pytest.raises(RuntimeError, match="synced"):
        rig.controller.start_workers()


def unelected_replica(
    rig: Rig, *, sync_timeout_seconds: float, sync_deadline_seconds: float = 300.0
) -> Replica:
    """A Replica (no leader election, health on a free port) whose controller is the rig's."""
    config = ProvisionerConfig.from_mapping(
        {
            "cluster_id": "unit",
            "clouds": {"default": emulator_cloud("http://127.0.0.1:9/v3", "u", "p", "project")},
            "default_cloud": "default",
            "namespace": "kube-system",
            "secret_namespace": "kube-system",
            "leader_election": {"enabled": False},
        }
    )
    replica = Replica(
        config,
        client_configuration=k8s.Configuration(host="http://127.0.0.1:9"),
        clouds={},
        health_address="127.0.0.1:0",
        sync_timeout_seconds=sync_timeout_seconds,
        sync_deadline_seconds=sync_deadline_seconds,
        metrics=rig.metrics,
    )
    replica.controller = rig.controller  # same wiring, with a source whose list we can hold back
    rig.controller.on_crash = replica.crash
    return replica


def test_readyz_and_workers_wait_for_the_caches_to_sync() -> None:
    """Leader with unsynced caches: /readyz 503, no workers, a log line; once synced, ready and working."""
    rig = make_rig(workers=2, open_gate=False)
    replica = unelected_replica(rig, sync_timeout_seconds=0.2)
    assert replica.health is not None
    with capture_logs() as logs:
        replica.start()
        try:
            port = replica.health.port
            assert eventually(lambda: any(e["event"] == "caches_not_synced_workers_held" for e in logs))
            assert (503, "not ready") == get(port, "/readyz")
            assert (200, "ok") == get(port, "/healthz")
            assert [] == rig.controller._threads
            assert not replica.leading.is_set()
            rig.source.gate.set()
            assert replica.leading.wait(5.0)
            assert (200, "ok") == get(port, "/readyz")
            assert [True, True] == [t.is_alive() for t in rig.controller._threads]
            assert 1.0 == rig.sample("cinder_provisioner_leader")
        finally:
            rig.source.close()
            replica.terminate(timeout=5.0)


def test_leader_whose_caches_never_sync_gives_up_instead_of_holding_on() -> None:
    """Past the sync deadline a leader stops with exit code 1 (lease released), never running workers."""
    rig = make_rig(workers=2, open_gate=False)
    replica = unelected_replica(rig, sync_timeout_seconds=0.1, sync_deadline_seconds=0.5)
    with capture_logs() as logs:
        replica.start()
        try:
            assert replica.wait(5.0)
            assert 1 == replica.exit_code
            assert not replica.leading.is_set()
            assert [] == rig.controller._threads
            gave_up = [e for e in logs if e["event"] == "caches_not_synced_giving_up_lease"]
            assert 1 == len(gave_up)
            assert gave_up[0]["unsynced"]
        finally:
            rig.source.close()
            replica.terminate(timeout=5.0)
