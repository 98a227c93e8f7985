"""keystoneauth1 session and cinderclient construction for one configured cloud.

Why separate: building the auth plugin (through keystoneauth1's own loaders, so every ``auth_type`` and
option keystoneauth knows works), TLS settings and microversion negotiation are set-up concerns; the
adapter's operations should not care whether the cloud runs Keystone or Cinder in no-auth mode.

cinderclient and keystoneauth log full request/response bodies at DEBUG; response bodies carry connection
info with CHAP passwords and cephx keys. The clients therefore get a private, disabled logger, never the
``keystoneauth`` / ``cinderclient`` ones an operator might switch to DEBUG.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any

import requests
from cinderclient import api_versions
from cinderclient.v3 import client as cinder_client
from keystoneauth1 import loading, session

from provisioner.config.auth import CloudConfig
from provisioner.domain.model import CinderCapabilities

#: Not registered with logging's manager: no handler, no level an operator could lower.
_SILENT = logging.Logger("provisioner.cinder-http-silenced", level=logging.CRITICAL + 1)
_SILENT.disabled = True


_last = threading.local()
_KEPT_HEADERS = ("x-openstack-request-id", "x-compute-request-id", "retry-after")


def _remember(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """requests response hook: keep this thread's last request id / Retry-After (never the body)."""
    _last.headers = {k: response.headers[k] for k in _KEPT_HEADERS if k in response.headers}


def last_response_headers() -> Mapping[str, str]:
    """Request id / Retry-After of the last HTTP response seen by *this* thread.

    cinderclient drops the response when it raises (and reads Nova's request-id header), so the adapter
    recovers Cinder's ``x-openstack-request-id`` from here.
    """
    headers: Mapping[str, str] = getattr(_last, "headers", {})
    return headers


def forget_last_response() -> None:
    """Clear this thread's record before a new call."""
    _last.headers = {}


def make_session(cloud: CloudConfig, *, pool_size: int = 10) -> session.Session:
    """A keystoneauth1 session for ``cloud`` (auth plugin from keystoneauth's loader, TLS, timeout).

    ``pool_size``: connections kept per host; the caller's in-flight cap (requests' default of 10 made
    every call beyond the tenth open, and then discard, a new connection).
    """
    plugin: Any = loading.get_plugin_loader(cloud.auth_type).load_from_options(**dict(cloud.auth))
    verify: bool | str = False if cloud.insecure else (cloud.cacert or True)
    http = requests.Session()
    pooled = requests.adapters.HTTPAdapter(pool_maxsize=max(1, pool_size))
    http.mount("https://", pooled)
    http.mount("http://", pooled)
    http.hooks["response"].append(_remember)
    # requests re-reads the proxy environment on every call (a quarter of our per-call CPU in profiles).
    # Read it once here instead: proxies still work, the per-call scan is gone.
    http.proxies.update(urllib.request.getproxies())
    http.trust_env = False
    if verify is True:  # what trust_env would have honoured
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return session.Session(
        session=http,
        auth=plugin,
        verify=verify,
        timeout=cloud.timeout_seconds,
        user_agent="cinder-provisioner",
    )


def make_client(sess: session.Session, cloud: CloudConfig, version: str) -> Any:
    """A cinderclient v3 client pinned to microversion ``version``."""
    return cinder_client.Client(
        session=sess,
        api_version=api_versions.APIVersion(version),
        region_name=cloud.region_name,
        endpoint_type=cloud.interface,
        os_endpoint=cloud.endpoint_override,
        retries=0,
        logger=_SILENT,
    )


def pin_endpoint(client: Any) -> None:
    """Resolve the Cinder endpoint from the service catalog once and keep it.

    keystoneauth otherwise walks (and deep-copies) the catalog on every request: about a quarter of the
    CPU of a Cinder call in profiles. The token is still attached and renewed per request as before; only
    the endpoint lookup is cached (a catalog change needs a restart, as with an explicit endpoint).
    """
    adapter = client.client
    if getattr(adapter, "endpoint_override", None):
        return
    endpoint = adapter.get_endpoint()
    if endpoint:
        adapter.endpoint_override = endpoint


def negotiate(sess: session.Session, cloud: CloudConfig) -> str:
    """The highest microversion the server, cinderclient and ``cloud.max_microversion`` all allow."""
    probe = make_client(sess, cloud, "3.0")
    wanted = api_versions.APIVersion(cloud.max_microversion or api_versions.MAX_VERSION)
    client_max = api_versions.APIVersion(api_versions.MAX_VERSION)
    wanted = min(wanted, client_max)
    version = api_versions.discover_version(probe, wanted)
    return str(version.get_string())


def capabilities_for(version: str) -> CinderCapabilities:
    """Feature gates for a negotiated microversion."""
    v = api_versions.APIVersion(version)

    def at_least(minimum: str) -> bool:
        return bool(v >= api_versions.APIVersion(minimum))

    return CinderCapabilities(
        microversion=version,
        attachments=at_least("3.44"),  # create 3.27 + complete 3.44: our flow needs both
        name_filter=at_least("3.34"),
        inuse_extend=at_least("3.42"),
        backups_as_source=at_least("3.47"),
        time_filters=at_least("3.60"),
    )
