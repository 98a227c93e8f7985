"""Provision and delete through the controller against real Cinder 29 behind real Keystone 30.

The controller's configuration names a clouds.yaml entry (password or application credential), so the
credentials, region and interface go the way an operator's would: clouds.yaml → keystoneauth → catalog.
(tox -e cinder-real)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from provisioner.adapters.kube import KubeAdapter
from provisioner.testworld.kube_sim import KubeSimulator
from tests.e2e.test_provisioning import CASES, check_provision_and_delete
from tests.e2e.world import World, assert_written_objects_valid

pytestmark = pytest.mark.cinder_real


@pytest.fixture(scope="module")
def keystone_cinder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """Real Keystone, real Cinder with ``auth_strategy = keystone``, and the clouds.yaml for both."""
    from provisioner.testworld.real_cinder.keystone import start_keystone
    from provisioner.testworld.real_cinder.launcher import start_real_cinder

    workdir: Path = tmp_path_factory.mktemp("keystone-e2e")
    with (
        start_keystone(workdir / "keystone") as keystone,
        start_real_cinder(workdir / "cinder", backends=("rbd", "iscsi"), keystone=keystone),
    ):
        yield keystone, keystone.write_clouds_yaml(workdir / "clouds.yaml")


def _cinder_calls(keystone: Any) -> int:
    """Requests Cinder served for a user: each one validated at Keystone (token cache off)."""
    return sum(
        1 for r in keystone.requests() if r["method"] == "GET" and r["path"].rstrip("/") == "/v3/auth/tokens"
    )


@pytest.mark.parametrize(
    ("cloud_name", "case"),
    [("keystone-appcred", CASES[0]), ("keystone-password", CASES[3])],
    ids=["appcred-rbd-csi", "password-iscsi-intree"],
)
def test_provision_and_delete_with_keystone(
    keystone_cinder: tuple[Any, Path],
    cloud_name: str,
    case: tuple[str, dict[str, str], str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The e2e round trip with keystone auth: bound, PV right, deleted; one login serves every call."""
    from provisioner.testworld.real_cinder.keystone import PROVISIONER_PASSWORD

    keystone, clouds_yaml = keystone_cinder
    who: dict[str, str] = (
        {"application_credential": keystone.app_credential.id}
        if cloud_name == "keystone-appcred"
        else {"user": "provisioner"}
    )
    logins_before, calls_before = keystone.logins(**who), _cinder_calls(keystone)
    with ExitStack() as stack:
        sim = stack.enter_context(KubeSimulator())
        kube = KubeAdapter(sim.configuration(), qps=500, burst=500)
        stack.callback(kube.close)
        cloud = {"clouds_yaml": str(clouds_yaml), "cloud": cloud_name}
        world = World(sim=sim, cloud=cloud, kube=kube, stack=stack)
        sc_name, params, source_key = case
        check_provision_and_delete(world, sc_name, params, source_key)
        world.stop_replicas()
        assert_written_objects_valid(sim)
    logins = keystone.logins(**who) - logins_before
    calls = _cinder_calls(keystone) - calls_before
    assert 1 == logins, (logins, calls)  # one token for the whole run (it lives an hour)
    assert calls >= 8, calls  # create, status polls, export, delete … all on that token
    out, err = capfd.readouterr()
    assert "cinder_connected" in out + err  # the controller's logs were captured here
    for secret in (PROVISIONER_PASSWORD, keystone.app_credential.secret):
        assert secret not in out + err
