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
