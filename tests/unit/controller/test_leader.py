"""Leader election against an in-memory lease store with resourceVersion-checked writes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from provisioner.domain.errors import ConfigError, KubeConflict, KubeNotFound, KubeUnavailable
from provisioner.runtime.leader import LeaderElector, validate_timing


class LeaseStore:
    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.rv = 0
        self.fail_writes_from: set[str] = set()

    def client(self, who: str) -> Any:
        store = self

        class C:
            def get(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
                if store.obj is None:
                    raise KubeNotFound("nf")
                return copy.deepcopy(store.obj)

            def create(self, resource: str, obj: Any, *, namespace: str | None = None) -> dict[str, Any]:
                if store.obj is not None:
                    raise KubeConflict("exists")
                store.rv += 1
                store.obj = copy.deepcopy(obj)
                store.obj["metadata"]["resourceVersion"] = str(store.rv)
                return copy.deepcopy(store.obj)

            def replace(self, resource: str, obj: Any, *, namespace: str | None = None) -> dict[str, Any]:
                if who in store.fail_writes_from:
                    raise KubeUnavailable("cut")
                assert store.obj is not None
                if obj["metadata"]["resourceVersion"] != store.obj["metadata"]["resourceVersion"]:
                    raise KubeConflict("stale")
                store.rv += 1
                store.obj = copy.deepcopy(obj)
                store.obj["metadata"]["resourceVersion"] = str(store.rv)
                return copy.deepcopy(store.obj)

        return C()


def elector(store: LeaseStore, who: str, clock: list[float]) -> LeaderElector:
    return LeaderElector(
        store.client(who), namespace="ns", name="lease", identity=who, clock=lambda: clock[0]
    )


def test_only_one_leader_and_takeover_after_expiry() -> None:
    """A holds the lease; B cannot take it until lease_duration passes without renewal."""
    store, clock = LeaseStore(), [0.0]
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock[0] = 14.0
    assert not b.try_acquire_or_renew()
    clock[0] = 15.5
    assert b.try_acquire_or_renew()
    assert "b" == store.obj["spec"]["holderIdentity"]  # type: ignore[index]
    assert 1 == store.obj["spec"]["leaseTransitions"]  # type: ignore[index]


def test_fencing_turns_off_before_a_standby_can_take_over() -> None:
    """With renewals cut, is_leader() is False after renew_deadline, before lease_duration."""
    store, clock = LeaseStore(), [0.0]
    a = elector(store, "a", clock)
    assert a.try_acquire_or_renew()
    store.fail_writes_from.add("a")
    clock[0] = 9.9
    assert not a.try_acquire_or_renew()
    assert a.is_leader()
    clock[0] = 10.0
    assert not a.is_leader()
    assert a.healthy()  # /healthz keeps passing for one more retry period
    clock[0] = 12.0
    assert not a.healthy()


def test_release_lets_standby_take_over_at_once() -> None:
    """After release the standby acquires immediately."""
    store, clock = LeaseStore(), [0.0]
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew()
    a.release()
    assert not a.is_leader()
    assert b.try_acquire_or_renew()


@pytest.mark.parametrize(("d", "r", "p"), [(10, 10, 2), (15, 2.4, 2), (15, 10, 0)])
def test_invalid_timing_is_a_config_error(d: float, r: float, p: float) -> None:
    """duration > renew deadline > 1.2 x retry period, else a ConfigError naming the setting."""
    with pytest.raises(ConfigError):
        validate_timing(d, r, p)


class CountingStore(LeaseStore):
    """The lease store, counting reads."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def client(self, who: str) -> Any:
        inner = super().client(who)
        store = self

        class C:
            def get(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
                store.gets += 1
                return inner.get(resource, name, namespace=namespace)  # type: ignore[no-any-return]

            create = inner.create
            replace = inner.replace

        return C()


def test_a_leader_renews_with_one_update_and_no_read() -> None:
    """client-go's fast path: renewals start from the Lease the last write returned (10 renewals: 0 gets)."""
    store, clock = CountingStore(), [0.0]
    a = elector(store, "a", clock)
    assert a.try_acquire_or_renew()
    gets_after_acquire = store.gets
    for i in range(10):
        clock[0] = 2.0 * (i + 1)
        assert a.try_acquire_or_renew()
    assert gets_after_acquire == store.gets
    assert a.is_leader()


def test_a_fast_renewal_that_finds_the_lease_taken_falls_back_and_stands_down() -> None:
    """Someone else wrote the Lease meanwhile: the version test fails, the full round reads it, and a live
    lease of another holder is respected (dated no earlier than our last successful renewal)."""
    store, clock = CountingStore(), [0.0]
    a = elector(store, "a", clock)
    assert a.try_acquire_or_renew()
    clock[0] = 2.0
    assert a.try_acquire_or_renew()
    # b takes over by force (as after a partition): a's next renewal must not overwrite it.
    assert store.obj is not None
    store.obj["spec"]["holderIdentity"] = "b"
    store.rv += 1
    store.obj["metadata"]["resourceVersion"] = str(store.rv)
    clock[0] = 4.0
    assert not a.try_acquire_or_renew()
    assert "b" == store.obj["spec"]["holderIdentity"]
    assert not a.is_leader()
    clock[0] = 2.0 + 15.0 - 0.1  # b's record, dated at a's last renewal, is still live
    assert not a.try_acquire_or_renew()
    assert "b" == store.obj["spec"]["holderIdentity"]


def test_a_fast_renewal_the_server_does_not_answer_is_retried_as_a_full_round() -> None:
    store, clock = CountingStore(), [0.0]
    a = elector(store, "a", clock)
    assert a.try_acquire_or_renew()
    store.fail_writes_from.add("a")
    clock[0] = 2.0
    assert not a.try_acquire_or_renew()
    store.fail_writes_from.clear()
    clock[0] = 4.0
    gets = store.gets
    assert a.try_acquire_or_renew()
    assert gets + 1 == store.gets  # the round after a failed fast renewal reads first
    assert a.is_leader()
