"""The Cinder adapter under failures only the emulator can produce on demand.

Real cinderclient + keystoneauth1 over HTTP to the emulator: quotas, rate limits, 5xx, request ids,
microversion negotiation, the in-flight cap, auth and connection failures, metrics observation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from provisioner.adapters.cinder.client import CinderAdapter, make_cinder
from provisioner.config.auth import CloudConfig, cloud_from_entry
from provisioner.domain.errors import (
    CinderAuthError,
    CinderBadRequest,
    CinderConflict,
    CinderError,
    CinderQuotaExceeded,
    CinderRateLimited,
    CinderUnavailable,
)
from provisioner.domain.model import Connector, CreateVolumeRequest, VolumeId
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator

CONNECTOR = Connector(host="h", ip="127.0.0.1", initiator="iqn.2024-01.io.netvol:faults")


def password_cloud(emu: CinderEmulator, **extra: Any) -> CloudConfig:
    """A password-auth cloud entry for the emulator's Keystone."""
    auth = {
        "auth_url": emu.keystone_url,
        "username": emu.username,
        "password": emu.password,
        "project_name": emu.project_name,
        "user_domain_name": "Default",
        "project_domain_name": "Default",
    }
    auth.update(extra.pop("auth", {}))
    return cloud_from_entry("emu", {"auth_type": "password", "auth": auth, **extra}, prefix="test")


class Recorder:
    """Collects sleeps and observations instead of sleeping."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.observed: list[tuple[str, str]] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def observe(self, operation: str, status: str, seconds: float) -> None:
        self.observed.append((operation, status))


@pytest.fixture
def emu() -> Iterator[CinderEmulator]:
    """A fresh emulator per test (fault plans are per test)."""
    with CinderEmulator() as e:
        yield e


@pytest.fixture
def rec() -> Recorder:
    """Sleep/observer recorder."""
    return Recorder()


@pytest.fixture
def adapter(emu: CinderEmulator, rec: Recorder) -> CinderAdapter:
    """A connected adapter that records instead of sleeping."""
    a = make_cinder(password_cloud(emu), max_in_flight=4, observer=rec.observe, sleep=rec.sleep)
    a.connect()
    return a


def _calls(emu: CinderEmulator, operation: str) -> int:
    return sum(1 for c in emu.calls() if c.operation == operation)


def _new(adapter: CinderAdapter, name: str = "pvc-x") -> VolumeId:
    return adapter.create_volume(CreateVolumeRequest(name=name, size_gib=1, volume_type="rbd")).id


def test_quota_exceeded_is_final_and_not_retried(emu: CinderEmulator, adapter: CinderAdapter) -> None:
    """413 from a quota → CinderQuotaExceeded (final), one create call only."""
    emu.quota.volumes = 1
    _new(adapter, "pvc-a")
    with pytest.raises(CinderQuotaExceeded) as info:
        _new(adapter, "pvc-b")
    assert (True, 413, 2) == (info.value.final, info.value.status_code, _calls(emu, "create_volume"))


def test_rate_limited_create_is_not_retried_and_carries_retry_after(
    emu: CinderEmulator, adapter: CinderAdapter
) -> None:
    """429 on create → CinderRateLimited with retry_after; create is never retried blindly."""
    emu.faults.fail_next("create_volume", status=429, retry_after=7)
    with pytest.raises(CinderRateLimited) as info:
        _new(adapter)
    assert (7.0, 1) == (info.value.retry_after, _calls(emu, "create_volume"))


def test_rate_limited_get_is_retried_after_retry_after(
    emu: CinderEmulator, adapter: CinderAdapter, rec: Recorder
) -> None:
    """429 on an idempotent call: waits Retry-After, then succeeds."""
    vid = _new(adapter)
    emu.faults.fail_next("get_volume", status=429, retry_after=3)
    volume = adapter.get_volume(vid)
    assert (vid, [3.0], 2) == (volume.id, rec.sleeps, _calls(emu, "get_volume"))


def test_unavailable_get_is_retried_with_backoff(
    emu: CinderEmulator, adapter: CinderAdapter, rec: Recorder
) -> None:
    """Two 503s on get: retried with growing waits, then success."""
    vid = _new(adapter)
    emu.faults.fail_next("get_volume", count=2, status=503)
    adapter.get_volume(vid)
    assert (2, True, 3) == (len(rec.sleeps), rec.sleeps[0] < rec.sleeps[1], _calls(emu, "get_volume"))


def test_persistent_5xx_gives_up_after_bounded_attempts(emu: CinderEmulator, adapter: CinderAdapter) -> None:
    """A get that keeps failing raises CinderUnavailable after exactly ``retry_attempts`` calls."""
    emu.faults.fail_next("get_volume", count=100, status=500)
    with pytest.raises(CinderUnavailable):
        adapter.get_volume(VolumeId("v"))
    assert 4 == _calls(emu, "get_volume")


def test_5xx_on_create_is_unavailable_and_not_retried(emu: CinderEmulator, adapter: CinderAdapter) -> None:
    """500 on create → CinderUnavailable after one call (the controller looks up before creating again)."""
    emu.faults.fail_next("create_volume", status=500)
    with pytest.raises(CinderUnavailable):
        _new(adapter)
    assert 1 == _calls(emu, "create_volume")


def test_delete_is_retried_and_404_counts_as_done(
    emu: CinderEmulator, adapter: CinderAdapter, rec: Recorder
) -> None:
    """delete_volume retries a 502 and treats the 404 that follows as success."""
    emu.faults.fail_next("delete_volume", status=502)
    adapter.delete_volume(VolumeId("00000000-0000-4000-8000-00000000000a"))
    assert [("delete_volume", "CinderUnavailable"), ("delete_volume", "ok")] == [
        o for o in rec.observed if o[0] == "delete_volume"
    ]


def test_request_id_is_kept_on_errors(emu: CinderEmulator, adapter: CinderAdapter) -> None:
    """The error carries the x-openstack-request-id Cinder sent with the failure."""
    emu.faults.fail_next("create_volume", status=409)
    with pytest.raises(CinderConflict) as info:
        _new(adapter)
    failed = [c for c in emu.calls() if c.operation == "create_volume"][-1]
    assert (failed.request_id, "create_volume") == (info.value.request_id, info.value.operation)


def test_invalid_state_400_is_a_conflict(emu: CinderEmulator, adapter: CinderAdapter) -> None:
    """Deleting a volume stuck in creating: Cinder's 'Invalid volume' 400 → CinderConflict (retry later)."""
    emu.faults.stuck_creating()
    vid = _new(adapter)
    with pytest.raises(CinderConflict) as info:
        adapter.delete_volume(vid)
    assert (400, False) == (info.value.status_code, info.value.final)


def test_microversion_negotiation_against_a_low_server() -> None:
    """A 3.30 server: negotiated 3.30, attachments unavailable, create_attachment refused locally."""
    with CinderEmulator(max_version="3.30") as emu:
        adapter = make_cinder(password_cloud(emu))
        caps = adapter.connect()
        vid = _new(adapter)
        emu.clear_calls()
        with pytest.raises(CinderBadRequest):
            adapter.create_attachment(vid, CONNECTOR)
        assert ("3.30", False, False, False, []) == (
            caps.microversion,
            caps.attachments,
            caps.name_filter,
            caps.inuse_extend,
            emu.calls(),
        )


def test_microversion_cap_from_config(emu: CinderEmulator) -> None:
    """max_microversion in the cloud config caps negotiation, and requests carry that version."""
    adapter = make_cinder(password_cloud(emu, max_microversion="3.44"))
    adapter.get_volume(_new(adapter))
    versions = {c.microversion for c in emu.calls() if c.operation in ("create_volume", "get_volume")}
    assert ("3.44", {"3.44"}) == (adapter.capabilities.microversion, versions)


def test_in_flight_cap_bounds_concurrent_calls(emu: CinderEmulator) -> None:
    """With max_in_flight=2, eight threads never have more than two Cinder calls open."""
    adapter = make_cinder(password_cloud(emu), max_in_flight=2)
    vid = _new(adapter)
    emu.faults.set_latency("get_volume", 0.05)
    emu.clear_calls()
    threads = [threading.Thread(target=adapter.get_volume, args=(vid,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (2, 8) == (emu.max_in_flight_seen, _calls(emu, "get_volume"))


class SlotRecorder:
    """What the slot observer saw, and what the call observer saw, per attempt."""

    def __init__(self) -> None:
        self.slots: list[tuple[str, str, float, float]] = []
        self.calls: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def slot(self, cloud: str, operation: str, waited: float, held: float) -> None:
        with self._lock:
            self.slots.append((cloud, operation, waited, held))

    def call(self, operation: str, status: str, seconds: float) -> None:
        with self._lock:
            self.calls.append((operation, seconds))


def test_slot_wait_and_hold_are_observed_apart_from_the_call(emu: CinderEmulator) -> None:
    """One slot, three calls of 0.2 s at once: the later ones wait for the slot (0.2 s, 0.4 s); that wait
    is the slot observer's, not the call's own latency; every slot is held at least its call's time."""
    rec = SlotRecorder()
    adapter = make_cinder(password_cloud(emu), max_in_flight=1, observer=rec.call, slot_observer=rec.slot)
    vid = _new(adapter)
    emu.faults.set_latency("get_volume", 0.2)
    rec.slots.clear()
    rec.calls.clear()
    threads = [threading.Thread(target=adapter.get_volume, args=(vid,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ["get_volume"] * 3 == [op for _, op, _, _ in rec.slots]
    assert {"emu"} == {cloud for cloud, _, _, _ in rec.slots}
    waits = sorted(w for _, _, w, _ in rec.slots)
    assert waits[1] >= 0.18, waits  # queued behind one call
    assert waits[2] >= 0.36, waits  # and behind two
    assert all(0.2 <= s < 0.36 for _, s in rec.calls), rec.calls  # its own time, not the queue's
    assert all(held >= 0.2 for _, _, _, held in rec.slots)


def test_slot_is_held_through_before_send_and_freed_when_it_raises(emu: CinderEmulator) -> None:
    """The create mark is written in the slot: its time counts as held; when it raises, nothing is sent,
    the slot is free again and the hold is still observed."""
    rec = SlotRecorder()
    adapter = make_cinder(password_cloud(emu), max_in_flight=1, observer=rec.call, slot_observer=rec.slot)
    adapter.connect()
    request = CreateVolumeRequest(name="pvc-s", size_gib=1, volume_type="rbd")
    emu.clear_calls()
    rec.slots.clear()
    rec.calls.clear()

    def refused() -> None:
        time.sleep(0.1)
        raise CinderConflict("the mark was refused", operation="create_volume")

    with pytest.raises(CinderConflict):
        adapter.create_volume(request, before_send=refused)
    assert (0, [], 1) == (_calls(emu, "create_volume"), rec.calls, len(rec.slots))
    assert rec.slots[0][3] >= 0.1
    adapter.create_volume(request, before_send=lambda: time.sleep(0.1))  # the one slot is free
    (_, call), (_, _, _, held) = rec.calls[-1], rec.slots[-1]
    assert held >= call + 0.1


def test_observer_sees_operation_and_status(
    emu: CinderEmulator, adapter: CinderAdapter, rec: Recorder
) -> None:
    """Every attempt is observed as (operation, "ok" | error class)."""
    emu.faults.fail_next("get_volume", status=503)
    vid = _new(adapter)
    adapter.get_volume(vid)
    expected = [("create_volume", "ok"), ("get_volume", "CinderUnavailable"), ("get_volume", "ok")]
    assert expected == [o for o in rec.observed if o[0] != "negotiate"]


def test_wrong_password_is_an_auth_error(emu: CinderEmulator) -> None:
    """Keystone refusing the password → CinderAuthError (final)."""
    adapter = make_cinder(password_cloud(emu, auth={"password": "wrong"}))
    with pytest.raises(CinderAuthError) as info:
        adapter.connect()
    assert True is info.value.final


def test_unreachable_cloud_is_unavailable(rec: Recorder) -> None:
    """Connection refused → CinderUnavailable after bounded retries (no library exception leaks)."""
    with CinderEmulator() as emu:
        cloud = password_cloud(emu)
    adapter = make_cinder(cloud, sleep=rec.sleep)
    with pytest.raises(CinderUnavailable):
        adapter.connect()
    assert 3 == len(rec.sleeps)


def test_application_credential_login(emu: CinderEmulator) -> None:
    """v3 application credentials log in through keystoneauth1 and reach Cinder."""
    cloud = cloud_from_entry(
        "ac",
        {
            "auth_type": "v3applicationcredential",
            "auth": {
                "auth_url": emu.keystone_url,
                "application_credential_id": emu.app_credential_id,
                "application_credential_secret": emu.app_credential_secret,
            },
        },
        prefix="test",
    )
    adapter = make_cinder(cloud)
    assert [] == list(adapter.list_volumes(metadata={"none": "such"}))


def test_noauth_mode_reaches_cinder_directly(emu: CinderEmulator) -> None:
    """No-auth mode: explicit endpoint + '<user>:<project>' token, no Keystone call at all."""
    cloud = cloud_from_entry(
        "na",
        {"auth_type": "noauth", "auth": {"endpoint": emu.cinder_url, "token": emu.noauth_token}},
        prefix="t",
    )
    vid = _new(make_cinder(cloud))
    assert (vid, 0) == (emu.volumes()[0]["id"], _calls(emu, "auth"))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 429, 500, 502, 503, 504, 418])
def test_no_third_party_exception_leaks(emu: CinderEmulator, adapter: CinderAdapter, status: int) -> None:
    """Whatever status Cinder answers, the adapter raises a CinderError subclass."""
    emu.faults.fail_next("*", count=10, status=status)
    with pytest.raises(CinderError):
        adapter.create_attachment(VolumeId("v"), CONNECTOR)
