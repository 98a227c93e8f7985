"""Keystone's refusals of a login translate to CinderAuthError, whatever HTTP status Keystone used.

Real Keystone answers a login with a revoked or expired token with 404 ("Failed to validate token"),
which must not read as a missing Cinder resource (found by tests/integration/test_real_keystone.py).
"""

from __future__ import annotations

import pytest
from keystoneauth1 import exceptions as ks_exc

from provisioner.adapters.cinder.errors import translate
from provisioner.domain.errors import CinderAuthError, CinderNotFound, CinderUnavailable

_LOGIN = "http://keystone:5000/v3/auth/tokens"


@pytest.mark.parametrize(
    ("cls", "status"),
    [(ks_exc.NotFound, 404), (ks_exc.Unauthorized, 401), (ks_exc.Forbidden, 403), (ks_exc.BadRequest, 400)],
)
def test_refused_login_is_an_auth_error(cls: type[ks_exc.HttpError], status: int) -> None:
    """4xx on POST /v3/auth/tokens → CinderAuthError naming Keystone, with the status."""
    refused = cls("Failed to validate token", url=_LOGIN, method="POST", http_status=status)
    err = translate(refused, "negotiate")
    assert CinderAuthError is type(err)
    # keystoneauth appends the status to Keystone's message
    assert f"keystone refused the credentials: Failed to validate token (HTTP {status})" == err.message
    assert (status, "negotiate") == (err.status_code, err.operation)


def test_keystone_down_at_login_stays_transient() -> None:
    """5xx on the login is Keystone being unavailable (retryable), not a credential problem."""
    err = translate(ks_exc.ServiceUnavailable("down", url=_LOGIN, method="POST"), "negotiate")
    assert CinderUnavailable is type(err)


def test_404_from_cinder_is_still_not_found() -> None:
    """A 404 from any other URL (a Cinder resource) keeps meaning 'not found'."""
    url = "http://cinder:8776/v3/p/volumes/v"
    err = translate(ks_exc.NotFound("no such volume", url=url, method="GET"), "get_volume")
    assert CinderNotFound is type(err)
