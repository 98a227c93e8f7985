"""The create's ``before_send`` runs once the call holds its in-flight slot, right before the request goes
out — the provision flow writes its create mark there — and when it raises nothing is sent (real adapter
over HTTP to the emulator)."""

from __future__ import annotations

import threading
import time

import pytest

from provisioner.adapters.cinder.client import make_cinder
from provisioner.domain.model import CreateVolumeRequest
from provisioner.flows.fencing import FencedCinder
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from tests.integration.test_cinder_adapter_faults import password_cloud


class _Abort(Exception):
    """The hook's own error."""


@pytest.mark.parametrize("hook_fails", [False, True])
def test_before_send_runs_after_the_slot_wait_and_a_failure_sends_nothing(hook_fails: bool) -> None:
    """The only slot is busy for 0.3 s: the hook runs only after it is freed (not while waiting); it
    raising propagates as it is, with no create at Cinder; otherwise exactly one create follows it."""
    with CinderEmulator() as emu:
        adapter = make_cinder(password_cloud(emu), max_in_flight=1)
        adapter.connect()
        fenced = FencedCinder(adapter, lambda: True)
        ran_at: list[float] = []
        outcome: list[object] = []

        def hook() -> None:
            ran_at.append(time.monotonic())
            if hook_fails:
                raise _Abort

        def create() -> None:
            try:
                request = CreateVolumeRequest(name="pvc-x", size_gib=1)
                outcome.append(fenced.create_volume(request, before_send=hook))
            except _Abort as e:
                outcome.append(e)

        adapter._slots.acquire()  # another worker's call holds the only slot
        worker = threading.Thread(target=create)
        worker.start()
        worker.join(0.3)
        assert (True, []) == (worker.is_alive(), ran_at)  # waiting for the slot: no mark yet
        freed_at = time.monotonic()
        adapter._slots.release()
        worker.join(10)
        creates = [c for c in emu.calls() if c.operation == "create_volume"]
        assert 1 == len(ran_at)
        assert ran_at[0] >= freed_at
        if hook_fails:
            assert (True, []) == (isinstance(outcome[0], _Abort), creates)
        else:
            assert 1 == len(creates)
            assert creates[0].at >= ran_at[0]
        adapter.close()


def test_an_idempotent_call_takes_no_before_send() -> None:
    """before_send is for calls sent once: a retried call refuses it (it would run per attempt)."""
    with CinderEmulator() as emu:
        adapter = make_cinder(password_cloud(emu))
        with pytest.raises(ValueError, match="sent once"):
            adapter._call("get_volume", lambda c: None, idempotent=True, before_send=lambda: None)
        adapter.close()
