"""Fencing holds across the in-flight slot wait: a replica that lost the lease while its create waited for
a slot sends nothing (real adapter over HTTP to the emulator)."""

from __future__ import annotations

import threading

import pytest

from provisioner.adapters.cinder.client import make_cinder
from provisioner.domain.errors import NotLeader
from provisioner.domain.model import CreateVolumeRequest
from provisioner.flows.fencing import FencedCinder
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from tests.integration.test_cinder_adapter_faults import password_cloud


@pytest.mark.parametrize("leads_after_wait", [False, True])
def test_create_waiting_for_a_slot_is_checked_again_before_it_is_sent(leads_after_wait: bool) -> None:
    """Leader when the create starts, not any more once its slot frees: NotLeader and no create at Cinder."""
    with CinderEmulator() as emu:
        adapter = make_cinder(password_cloud(emu), max_in_flight=1)
        adapter.connect()
        leading = [True]
        fenced = FencedCinder(adapter, lambda: leading[0])
        adapter._slots.acquire()  # the only slot is busy (another worker's call)
        outcome: list[object] = []

        def create() -> None:
            try:
                outcome.append(fenced.create_volume(CreateVolumeRequest(name="pvc-x", size_gib=1)))
            except NotLeader as e:
                outcome.append(e)

        worker = threading.Thread(target=create)
        worker.start()
        worker.join(0.3)
        assert worker.is_alive()  # waiting for the slot, having passed the first check
        leading[0] = leads_after_wait
        adapter._slots.release()
        worker.join(10)
        creates = [c for c in emu.calls() if c.operation == "create_volume"]
        if leads_after_wait:
            assert (1, False) == (len(creates), isinstance(outcome[0], NotLeader))
        else:
            assert isinstance(outcome[0], NotLeader)
            assert [] == creates
        adapter.close()
