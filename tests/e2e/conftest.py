"""Fixtures for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# the node with the rbd-fuse + loop stand-in for rbd map, for the test_real_ceph_* data-integrity modules
from tests.e2e.ceph_node import ceph_node  # noqa: F401

# real Ceph behind Cinder's RBD driver, one per session, shared by the test_real_ceph* modules
from tests.e2e.ceph_world import ceph_cinder  # noqa: F401
from tests.e2e.world import World, emulator_world


@pytest.fixture
def world() -> Iterator[World]:
    """Simulator + emulator, no replica yet (tests start one, possibly with settings)."""
    with emulator_world() as w:
        yield w
