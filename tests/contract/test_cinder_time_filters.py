"""The ``created_at`` list filter the shared status reads rely on (microversion 3.60), on both backends.

``list_volumes(created_since=…)`` must list a volume created at or after that time (whole seconds: the
adapter floors, so a fractional ``created_since`` equal to the volume's own ``created_at`` still lists it),
leave out one created before, and keep the metadata filter; below 3.60 the adapter refuses rather than send
a filter Cinder would silently drop (and list everything).
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from provisioner.adapters.cinder.client import make_cinder
from provisioner.domain import names
from provisioner.domain.model import CreateVolumeRequest, Volume
from tests.contract.conftest import CinderWorld


def _created(cinder: CinderWorld, tag: dict[str, str]) -> Volume:
    request = CreateVolumeRequest(
        name=cinder.unique(),
        size_gib=1,
        volume_type="rbd",
        metadata={names.META_CLUSTER: cinder.cluster, **tag},
    )
    volume = cinder.adapter.create_volume(request)
    seen = cinder.wait_status(volume.id, "available")
    assert seen.created_at is not None
    return seen


def test_capabilities_offer_time_filters(cinder: CinderWorld) -> None:
    assert cinder.adapter.capabilities.time_filters


def test_created_since_lists_the_volumes_created_at_or_after_it(cinder: CinderWorld) -> None:
    tag = {"contract/batch": cinder.unique("batch")}
    volume = _created(cinder, tag)
    assert volume.created_at is not None
    at = volume.created_at

    def listed(since: float) -> set[str]:
        return {v.id for v in cinder.adapter.list_volumes(metadata=tag, created_since=since)}

    assert {volume.id} == listed(at)  # its own created_at, fraction and all (floored to the second)
    assert {volume.id} == listed(math.floor(at) + 0.999)  # the same second
    assert {volume.id} == listed(at - 5.0)
    assert set() == listed(at + 60.0)
    other = {"contract/batch": cinder.unique("batch")}
    assert [] == list(cinder.adapter.list_volumes(metadata=other, created_since=at - 5.0))


def test_below_3_60_the_adapter_refuses_the_filter(cinder: CinderWorld) -> None:
    old = make_cinder(dataclasses.replace(cinder.cloud, max_microversion="3.59"), max_in_flight=2)
    assert not old.capabilities.time_filters
    with pytest.raises(ValueError, match=r"3\.60"):
        list(old.list_volumes(metadata={names.META_CLUSTER: cinder.cluster}, created_since=0.0))
    old.close()
