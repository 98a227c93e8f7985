"""Fault injection (5xx, 429 + Retry-After, latency) and the request log."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provisioner.testworld.kube_sim import KubeSimulator, RequestRecord


def test_fail_next_answers_5xx_then_recovers(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """fail_next(2, status=503) fails exactly the next two matching requests."""
    sim.faults.fail_next(2, status=503, method="GET", path="/configmaps")
    codes = []
    for _ in range(3):
        try:
            core.list_namespaced_config_map("default")
            codes.append(200)
        except ApiException as e:
            codes.append(e.status)
    assert [503, 503, 200] == codes


def test_429_carries_retry_after(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """An injected 429 is a TooManyRequests Status with a Retry-After header."""
    sim.faults.fail_next(status=429, retry_after=7, method="POST")
    with pytest.raises(ApiException) as e:
        core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    body = json.loads(e.value.body)
    assert (429, "7", "TooManyRequests", 7) == (
        e.value.status,
        e.value.headers["Retry-After"],
        body["reason"],
        body["details"]["retryAfterSeconds"],
    )


def test_fault_path_filter_leaves_others_alone(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """A rule for one path does not affect other paths."""
    sim.faults.fail_next(status=500, path="persistentvolumeclaims")
    core.list_namespaced_config_map("default")
    with pytest.raises(ApiException) as e:
        core.list_namespaced_persistent_volume_claim("default")
    assert 500 == e.value.status


def test_latency(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """add_latency delays matching requests."""
    sim.faults.add_latency(0.3, path="/secrets", count=1)
    started = time.monotonic()
    core.list_namespaced_secret("default")
    slow = time.monotonic() - started
    started = time.monotonic()
    core.list_namespaced_secret("default")
    fast = time.monotonic() - started
    assert slow >= 0.3 > fast


def test_failing_watch_start(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """Watch requests can be failed separately from lists (watch=True filter)."""
    from kubernetes import watch

    sim.faults.fail_next(status=500, watch=True)
    core.list_namespaced_config_map("default")
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=1))
    assert 500 == e.value.status


def test_request_log(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """The request log records method, path, query and status of what the client sent."""
    sim.faults.clear_requests()
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    with pytest.raises(ApiException):
        core.read_namespaced_secret("missing", "default")
    core.list_namespaced_secret("default", label_selector="a=b")
    assert [
        RequestRecord(method="POST", path="/api/v1/namespaces/default/secrets", query="", status=201),
        RequestRecord(method="GET", path="/api/v1/namespaces/default/secrets/missing", query="", status=404),
        RequestRecord(
            method="GET", path="/api/v1/namespaces/default/secrets", query="labelSelector=a%3Db", status=200
        ),
    ] == sim.requests
