"""Fixtures: a started simulator per test and official-client API objects bound to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from provisioner.testworld.kube_sim import KubeSimulator


@pytest.fixture
def sim() -> Iterator[KubeSimulator]:
    """A running simulator with every controller on and fast bookmarks."""
    with KubeSimulator(bookmark_interval=0.2) as s:
        yield s
        assert [] == s.controller_errors


@pytest.fixture
def api(sim: KubeSimulator) -> Iterator[client.ApiClient]:
    """An official ApiClient for ``sim``."""
    with sim.api_client() as c:
        yield c


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    """CoreV1Api."""
    return client.CoreV1Api(api)


@pytest.fixture
def storage(api: client.ApiClient) -> client.StorageV1Api:
    """StorageV1Api."""
    return client.StorageV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    """CustomObjectsApi."""
    return client.CustomObjectsApi(api)
