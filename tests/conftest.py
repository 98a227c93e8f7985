"""Session-wide fixtures: the real-backends runs leave nothing behind (issue 12).

``pytest_configure`` marks this run in ``os.environ`` (``tests.real_leftovers.RUN_MARK``) before any test
starts a process, so every process the run starts carries the mark.  When the session runs any
``cinder_real`` test (the real-Cinder and real-backends tiers start real daemons, rbd-fuse, mounts and
loop devices), ``nothing_left_behind`` checks once every other fixture is gone (it is the first session
fixture set up, so the last torn down) that no process with the mark is alive and no mount, FUSE mount
or loop device lives under the run's base temp directory; what it finds fails the session ("ERROR at
teardown" of the last test, listing them) and is then reaped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests import real_leftovers


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(real_leftovers.RUN_MARK, f"{os.getpid()}-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """After the last test: no process, mount, FUSE mount or loop device of this run is left."""
    real = any(item.get_closest_marker("cinder_real") for item in request.session.items)
    yield
    if not real:
        return
    found = real_leftovers.find(os.environ[real_leftovers.RUN_MARK], [tmp_path_factory.getbasetemp()])
    if found:
        real_leftovers.reap(found)
    assert not found, f"the run left these behind (now reaped): {found}"
