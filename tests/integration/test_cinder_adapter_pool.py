"""The Cinder adapter keeps as many connections as it has calls in flight.

requests' default pool holds 10 connections per host: with ``cinder_max_in_flight`` 32 every call beyond
the tenth opened a new connection and threw it away afterwards (urllib3's "Connection pool is full,
discarding connection" in the benchmark's log), a TCP (and, on a real cloud, TLS) handshake per call.
"""

from __future__ import annotations

import logging
import threading

import pytest

from provisioner.adapters.cinder.client import make_cinder
from provisioner.domain.model import CreateVolumeRequest
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from tests.integration.test_cinder_adapter_faults import password_cloud


def _concurrent_gets(adapter: object, volume_id: object, n: int) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def one() -> None:
        try:
            barrier.wait()
            adapter.get_volume(volume_id)  # type: ignore[attr-defined]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [] == errors


@pytest.mark.parametrize("in_flight", [16, 24])
def test_calls_up_to_the_in_flight_cap_reuse_pooled_connections(
    in_flight: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Two rounds of ``in_flight`` overlapping calls: no connection is discarded for want of pool room."""
    with CinderEmulator() as emu:
        adapter = make_cinder(password_cloud(emu), max_in_flight=in_flight)
        try:
            volume = adapter.create_volume(CreateVolumeRequest(name="pool", size_gib=1))
            emu.faults.set_latency("get_volume", 0.2)  # the calls of one round overlap
            with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
                _concurrent_gets(adapter, volume.id, in_flight)
                _concurrent_gets(adapter, volume.id, in_flight)
        finally:
            adapter.close()
    full = [r.getMessage() for r in caplog.records if "Connection pool is full" in r.getMessage()]
    assert [] == full
