"""The Cinder adapter against real Keystone 30 + real Cinder 29 with ``auth_strategy = keystone``.

Logins from a clouds.yaml (password, application credential), the endpoint from the service catalog
(region, interface), clear one-line errors (wrong password, revoked / expired token, no endpoint), token
reuse (logins counted at Keystone: one per token lifetime) and re-authentication after a 401.
(tox -e cinder-real)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.adapters.cinder.client import CinderAdapter, make_cinder
from provisioner.config.auth import CloudConfig, cloud_from_entry, parse_cloud
from provisioner.domain.errors import CinderAuthError, CinderBadRequest, CinderNotFound
from provisioner.domain.model import CreateVolumeRequest

pytestmark = pytest.mark.cinder_real

#: keystoneauth renews a token that has less than 120 s left: a 130 s lifetime leaves 10 s of use.
USEFUL_LIFE = 10
TOKEN_EXPIRATION = 120 + USEFUL_LIFE


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Path]]:
    """Real Keystone, then real Cinder authenticating against it; a clouds.yaml with both credentials."""
    from provisioner.testworld.real_cinder.keystone import start_keystone
    from provisioner.testworld.real_cinder.launcher import start_real_cinder

    workdir: Path = tmp_path_factory.mktemp("keystone-cinder")
    with (
        start_keystone(workdir / "keystone", token_expiration=TOKEN_EXPIRATION) as keystone,
        start_real_cinder(workdir / "cinder", backends=("rbd",), keystone=keystone) as cinder,
    ):
        yield keystone, cinder, keystone.write_clouds_yaml(workdir / "clouds.yaml")


def _cloud(clouds_yaml: Path, name: str, **override: Any) -> CloudConfig:
    """A cloud of our configuration that names an entry of the clouds.yaml (as an operator writes it)."""
    return parse_cloud(
        "default", {"clouds_yaml": str(clouds_yaml), "cloud": name, **override}, env={}, base_dir=None
    )


def _adapter(cloud: CloudConfig) -> CinderAdapter:
    return make_cinder(cloud, max_in_flight=4, retry_attempts=1)


def _round_trip(adapter: CinderAdapter) -> None:
    """Create, read, find and delete one volume: every call authenticated by Keystone at Cinder."""
    name = f"pvc-{uuid.uuid4()}"
    cluster = "keystone-test"
    request = CreateVolumeRequest(
        name=name, size_gib=1, volume_type="rbd", metadata={"netvol.io/cluster": cluster}
    )
    volume = adapter.create_volume(request)
    deadline = time.monotonic() + 60
    while adapter.get_volume(volume.id).status != "available":
        assert time.monotonic() < deadline, "volume never became available"
        time.sleep(0.1)
    found = adapter.find_volume(name=name, cluster=cluster)
    assert found is not None
    assert volume.id == found.id
    adapter.delete_volume(volume.id)
    while True:
        try:
            adapter.get_volume(volume.id)
        except CinderNotFound:
            break
        assert time.monotonic() < deadline, "volume never went away"
        time.sleep(0.1)


def _endpoint(adapter: CinderAdapter) -> str:
    """The Cinder endpoint the adapter resolved from the catalog (cinderclient's keystoneauth adapter)."""
    adapter.connect()
    return str(adapter._client.client.endpoint_override)


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


def test_password_login_from_clouds_yaml_uses_the_public_endpoint(world: tuple[Any, Any, Path]) -> None:
    """Password auth from clouds.yaml: one login, the catalog's public endpoint, a full volume round trip."""
    keystone, cinder, clouds_yaml = world
    before = keystone.logins(user="provisioner")
    adapter = _adapter(_cloud(clouds_yaml, "keystone-password"))
    try:
        _round_trip(adapter)
        assert cinder.url == _endpoint(adapter)  # http://127.0.0.1:<port>/v3/<k8s project id>
        assert 1 == keystone.logins(user="provisioner") - before
    finally:
        adapter.close()


def test_application_credential_login_from_clouds_yaml(world: tuple[Any, Any, Path]) -> None:
    """An application credential logs in (by id, once) and works in the credential's project."""
    keystone, cinder, clouds_yaml = world
    credential = keystone.app_credential.id
    before = keystone.logins(application_credential=credential)
    adapter = _adapter(_cloud(clouds_yaml, "keystone-appcred"))
    try:
        _round_trip(adapter)
        assert cinder.url == _endpoint(adapter)
        assert 1 == keystone.logins(application_credential=credential) - before
    finally:
        adapter.close()


def test_internal_interface_picks_the_internal_endpoint(world: tuple[Any, Any, Path]) -> None:
    """``interface: internal`` resolves the catalog's internal URL (localhost), which serves too."""
    _, cinder, clouds_yaml = world
    adapter = _adapter(_cloud(clouds_yaml, "keystone-password", interface="internal"))
    try:
        endpoint = _endpoint(adapter)
        assert cinder.url.replace("127.0.0.1", "localhost") == endpoint
        assert [] == list(adapter.list_volumes(metadata={"netvol.io/cluster": "nobody"}))
    finally:
        adapter.close()


@pytest.mark.parametrize(
    "override",
    [{"region_name": "RegionTwo"}, {"interface": "admin"}],
    ids=["wrong-region", "no-admin-endpoint"],
)
def test_missing_endpoint_is_one_clear_line(world: tuple[Any, Any, Path], override: dict[str, str]) -> None:
    """No block-storage endpoint for the region / interface: CinderBadRequest saying what to check."""
    _, _, clouds_yaml = world
    adapter = _adapter(_cloud(clouds_yaml, "keystone-password", **override))
    try:
        with pytest.raises(CinderBadRequest) as caught:
            adapter.connect()
        text = _one_line(caught.value)
        assert "no Block Storage endpoint in the service catalog (check region_name / interface)" in text
    finally:
        adapter.close()


def test_wrong_password_is_one_clear_line(world: tuple[Any, Any, Path]) -> None:
    """Keystone's 401 for a wrong password: CinderAuthError from keystone, the password nowhere."""
    keystone, _, _ = world
    wrong = "not-the-password-" + uuid.uuid4().hex
    cloud = cloud_from_entry(
        "default",
        {
            "auth_type": "password",
            "auth": {
                "auth_url": keystone.auth_url,
                "username": "provisioner",
                "password": wrong,
                "project_name": "k8s",
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": keystone.region,
        },
        prefix="clouds.default",
    )
    adapter = _adapter(cloud)
    try:
        with pytest.raises(CinderAuthError) as caught:
            adapter.connect()
        text = _one_line(caught.value)
        assert text.startswith("keystone refused the credentials: ")
        assert "status=401" in text
        assert wrong not in text
    finally:
        adapter.close()


def _token_cloud(keystone: Any, token: str) -> CloudConfig:
    return cloud_from_entry(
        "default",
        {
            "auth_type": "token",
            "auth": {
                "auth_url": keystone.auth_url,
                "token": token,
                "project_name": "k8s",
                "project_domain_name": "Default",
            },
            "region_name": keystone.region,
        },
        prefix="clouds.default",
    )


def test_revoked_token_is_one_clear_line(world: tuple[Any, Any, Path]) -> None:
    """A pre-issued token (auth_type token) works, then, revoked at Keystone, gives CinderAuthError."""
    from provisioner.testworld.real_cinder.keystone import PROVISIONER_PASSWORD

    keystone, _, _ = world
    token = keystone.issue_token("provisioner", PROVISIONER_PASSWORD)
    working = _adapter(_token_cloud(keystone, token))
    try:
        assert [] == list(working.list_volumes(metadata={"netvol.io/cluster": "nobody"}))
    finally:
        working.close()
    keystone.revoke(token)
    adapter = _adapter(_token_cloud(keystone, token))
    try:
        with pytest.raises(CinderAuthError) as caught:
            adapter.connect()
        text = _one_line(caught.value)
        assert text.startswith("keystone refused the credentials: ")
        assert token not in text
    finally:
        adapter.close()


def test_token_is_reused_for_its_lifetime_then_renewed(world: tuple[Any, Any, Path]) -> None:
    """Many calls, one login per token lifetime: 1 login for a burst, 1 more once the token runs out."""
    keystone, _, clouds_yaml = world
    before = keystone.logins(user="provisioner")
    adapter = _adapter(_cloud(clouds_yaml, "keystone-password"))
    try:
        started = time.monotonic()
        calls = 0
        while time.monotonic() - started < USEFUL_LIFE - 4:  # well inside the first token's useful life
            list(adapter.list_volumes(metadata={"netvol.io/cluster": "nobody"}))
            adapter.find_volume(name="pvc-none", cluster="nobody")
            calls += 2
        assert calls >= 6, calls
        assert 1 == keystone.logins(user="provisioner") - before
        time.sleep(max(0.0, USEFUL_LIFE + 0.5 - (time.monotonic() - started)))
        for _ in range(4):
            list(adapter.list_volumes(metadata={"netvol.io/cluster": "nobody"}))
        assert 2 == keystone.logins(user="provisioner") - before
    finally:
        adapter.close()


def test_revoked_session_token_is_refetched_after_401(world: tuple[Any, Any, Path]) -> None:
    """Revoke the adapter's token mid-run: Cinder answers 401, the adapter logs in again, the call works."""
    keystone, _, clouds_yaml = world
    credential = keystone.app_credential.id
    before = keystone.logins(application_credential=credential)
    adapter = _adapter(_cloud(clouds_yaml, "keystone-appcred"))
    try:
        list(adapter.list_volumes(metadata={"netvol.io/cluster": "nobody"}))
        token = adapter._session.get_token()  # the token keystoneauth holds for this adapter
        refused_before = _refused_validations(keystone)
        keystone.revoke(token)
        assert [] == list(adapter.list_volumes(metadata={"netvol.io/cluster": "nobody"}))
        assert 2 == keystone.logins(application_credential=credential) - before
        assert adapter._session.get_token() != token
        # Cinder's keystonemiddleware asked Keystone about the revoked token and was refused: that 401
        # is what made keystoneauth log in again.
        assert _refused_validations(keystone) > refused_before
        for _ in range(5):
            list(adapter.list_volumes(metadata={"netvol.io/cluster": "nobody"}))
        assert 2 == keystone.logins(application_credential=credential) - before
    finally:
        adapter.close()


def _refused_validations(keystone: Any) -> int:
    return sum(
        1
        for r in keystone.requests()
        if r["method"] == "GET" and r["path"].rstrip("/") == "/v3/auth/tokens" and r.get("status") == 404
    )


def test_expired_token_is_one_clear_line(tmp_path: Path) -> None:
    """A token past its Keystone lifetime (2 s here) is refused at login: CinderAuthError, one line."""
    from provisioner.testworld.real_cinder.keystone import PROVISIONER_PASSWORD, start_keystone

    with start_keystone(tmp_path / "keystone", token_expiration=2) as keystone:
        token = keystone.issue_token("provisioner", PROVISIONER_PASSWORD)
        time.sleep(3)
        adapter = _adapter(_token_cloud(keystone, token))
        try:
            with pytest.raises(CinderAuthError) as caught:
                adapter.connect()
            text = _one_line(caught.value)
            assert text.startswith("keystone refused the credentials: ")
            assert token not in text
        finally:
            adapter.close()


def test_no_volume_left(world: tuple[Any, Any, Path]) -> None:
    """The round trips above deleted what they created (checked with the launcher's admin token)."""
    keystone, cinder, _ = world
    cloud = cloud_from_entry(
        "admin",
        {"auth_type": "noauth", "auth": {"endpoint": cinder.url, "token": keystone.admin_token()}},
        prefix="clouds.admin",
    )
    adapter = _adapter(cloud)
    try:
        assert [] == list(adapter.list_volumes(metadata={"netvol.io/cluster": "keystone-test"}))
    finally:
        adapter.close()
