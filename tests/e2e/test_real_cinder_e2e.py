"""The end-to-end provision/delete round trip against real OpenStack Cinder (tox -e cinder-real)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from provisioner.adapters.kube import KubeAdapter
from provisioner.testworld.kube_sim import KubeSimulator
from tests.e2e.test_provisioning import CASES, check_provision_and_delete
from tests.e2e.world import World, assert_written_objects_valid

pytestmark = pytest.mark.cinder_real


@pytest.fixture(scope="module")
def real_cinder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real Cinder (API + scheduler + volume in a subprocess) for the module."""
    from provisioner.testworld.real_cinder.launcher import start_real_cinder

    workdir: Path = tmp_path_factory.mktemp("cinder")
    with start_real_cinder(workdir, backends=("rbd", "iscsi")) as handle:
        yield handle


@pytest.fixture
def real_world(real_cinder: object) -> Iterator[World]:
    """Simulator + real Cinder (no-auth, explicit endpoint)."""
    handle = real_cinder
    with ExitStack() as stack:
        sim = stack.enter_context(KubeSimulator())
        kube = KubeAdapter(sim.configuration(), qps=500, burst=500)
        stack.callback(kube.close)
        cloud = {"auth_type": "noauth", "auth": {"endpoint": handle.url, "token": handle.token}}  # type: ignore[attr-defined]
        world = World(sim=sim, cloud=cloud, kube=kube, stack=stack)
        yield world
        world.stop_replicas()
        assert_written_objects_valid(sim)


@pytest.mark.parametrize(("sc_name", "params", "source_key"), CASES, ids=[c[0] for c in CASES])
def test_provision_and_delete_on_real_cinder(
    real_world: World, sc_name: str, params: dict[str, str], source_key: str
) -> None:
    """Same round trip as the emulator e2e test, against real Cinder 29."""
    check_provision_and_delete(real_world, sc_name, params, source_key)


def test_sandbox_with_real_cinder() -> None:
    """``cinder-provisioner sandbox --cinder real`` binds and deletes every claim, no volume left."""
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioner.cli.main",
            "sandbox",
            "--pvcs",
            "4",
            "--cinder",
            "real",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (4, 4, 0) == (summary["bound"], summary["deleted"], summary["leaked_volumes"])
