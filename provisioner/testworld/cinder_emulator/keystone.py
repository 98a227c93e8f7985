"""Keystone v3 for the Cinder emulator: version discovery and token issue with a service catalog.

Why: keystoneauth1 must really log in (password, application credential, token), discover the identity
version and pick the Block Storage endpoint from a catalog, exactly as against a real cloud; this is the
smallest Keystone that lets it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from provisioner.testworld.cinder_emulator.state import ApiError, not_found

if TYPE_CHECKING:
    from provisioner.testworld.cinder_emulator.http import Server


def keystone(emu: Server, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
    """Serve ``/identity…``: version discovery and token issue."""
    ks = f"{emu.base_url}/identity/v3/"
    version = {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": ks}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }
    if method == "GET" and path == "/identity":
        return 300, {"versions": {"values": [version]}}, {}
    if method == "GET" and path == "/identity/v3":
        return 200, {"version": version}, {}
    if method == "POST" and path == "/identity/v3/auth/tokens":
        return _issue_token(emu, body)
    raise not_found("Resource", path)


def _issue_token(emu: Server, body: Any) -> tuple[int, Any, dict[str, str]]:
    ident = emu.identity
    identity = (body or {}).get("auth", {}).get("identity", {})
    methods = identity.get("methods") or []
    denied = ApiError(401, "error", "The request you have made requires authentication.")
    if "password" in methods:
        user = identity.get("password", {}).get("user", {})
        if user.get("password") != ident.password or user.get("name", user.get("id")) not in (
            ident.username,
            "u-" + ident.username,
        ):
            raise denied
    elif "application_credential" in methods:
        cred = identity.get("application_credential", {})
        if cred.get("secret") != ident.app_cred_secret or cred.get("id") != ident.app_cred_id:
            raise denied
    elif "token" in methods:
        if identity.get("token", {}).get("id") not in ident.tokens:
            raise denied
    else:
        raise denied
    token = uuid.uuid4().hex
    with emu.lock:
        ident.tokens.add(token)
    cinder = f"{emu.base_url}/v3/{ident.project_id}"
    domain = {"id": "default", "name": "Default"}

    def service(kind: str, url: str) -> dict[str, Any]:
        return {
            "type": kind,
            "name": kind,
            "id": uuid.uuid5(uuid.NAMESPACE_URL, kind).hex,
            "endpoints": [
                {
                    "id": uuid.uuid4().hex,
                    "interface": i,
                    "region": "RegionOne",
                    "region_id": "RegionOne",
                    "url": url,
                }
                for i in ("public", "internal", "admin")
            ],
        }

    token_body = {
        "token": {
            "methods": methods,
            "expires_at": "2099-01-01T00:00:00.000000Z",
            "issued_at": "2026-01-01T00:00:00.000000Z",
            "user": {"id": "u-" + ident.username, "name": ident.username, "domain": domain},
            "project": {"id": ident.project_id, "name": ident.project_name, "domain": domain},
            "roles": [{"id": "r-admin", "name": "admin"}, {"id": "r-member", "name": "member"}],
            "catalog": [
                service("block-storage", cinder),
                service("volumev3", cinder),
                service("identity", f"{emu.base_url}/identity/v3"),
            ],
        }
    }
    return 201, token_body, {"X-Subject-Token": token}
