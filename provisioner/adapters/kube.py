"""Kubernetes adapter: the official ``kubernetes`` client's transport, configuration and auth, raw JSON out.

Why raw JSON: the generated model classes cost milliseconds per object to (de)serialize and several KiB of
memory each; the controller's budget is ≤ 2 ms CPU per PVC and ≤ 10 KiB per cached object. So requests go
through the client's own ``RESTClientObject`` (same config, TLS, auth and connection pool as the typed
APIs) and responses are parsed once, with ``orjson`` (faster than ``json`` on API objects, and it shares
one string per repeated map key across objects, so cached claims and PVs take less memory). The URL
prefix, default headers and auth header that ``ApiClient.param_serialize`` would recompute on every
request (running the kubeconfig's token refresh hook each time, ~20 % of a request's CPU) are taken once
every ``AUTH_REFRESH_SECONDS``.
Every failure becomes a ``KubeError``.
A token bucket enforces the configured client QPS / burst (the Python client has none).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import orjson
import urllib3

from provisioner.adapters.kube_client import ApiClient, Configuration, exceptions
from provisioner.adapters.kube_client import config as kube_config
from provisioner.domain.errors import (
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeGone,
    KubeInvalid,
    KubeNotFound,
    KubeTooManyRequests,
    KubeUnavailable,
)

#: How long the auth header (and URL prefix, default headers) is reused before the client's refresh hook
#: runs again: far below any token's lifetime (in-cluster tokens are re-read about once a minute).
AUTH_REFRESH_SECONDS = 5.0

PatchType = Literal["json", "merge", "strategic"]
_PATCH_CONTENT_TYPES: Mapping[PatchType, str] = {
    "json": "application/json-patch+json",
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


@dataclass(frozen=True, slots=True)
class Resource:
    """Where a kind lives in the API."""

    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    namespaced: bool


RESOURCES: Mapping[str, Resource] = {
    "persistentvolumeclaims": Resource("/api/v1", "persistentvolumeclaims", True),
    "persistentvolumes": Resource("/api/v1", "persistentvolumes", False),
    "secrets": Resource("/api/v1", "secrets", True),
    "events": Resource("/api/v1", "events", True),
    "nodes": Resource("/api/v1", "nodes", False),
    "storageclasses": Resource("/apis/storage.k8s.io/v1", "storageclasses", False),
    "leases": Resource("/apis/coordination.k8s.io/v1", "leases", True),
    "volumesnapshots": Resource("/apis/snapshot.storage.k8s.io/v1", "volumesnapshots", True),
    "volumesnapshotcontents": Resource("/apis/snapshot.storage.k8s.io/v1", "volumesnapshotcontents", False),
    "volumesnapshotclasses": Resource("/apis/snapshot.storage.k8s.io/v1", "volumesnapshotclasses", False),
}


class TokenBucket:
    """Client-side rate limit: ``qps`` tokens per second, bucket of ``burst``. Thread-safe, blocking."""

    def __init__(self, *, qps: float, burst: int, clock: Any = time.monotonic, sleep: Any = time.sleep):
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be > 0 and burst >= 1")
        self._qps = qps
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, waiting for it if needed."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self._qps if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


def load_client_configuration(kubeconfig: str | None) -> Any:
    """In-cluster config when running in a pod, else the kubeconfig (explicit path or default)."""
    config = Configuration()
    if kubeconfig is None:
        try:
            kube_config.load_incluster_config(client_configuration=config)
        except kube_config.ConfigException:
            kube_config.load_kube_config(client_configuration=config)
        return config
    kube_config.load_kube_config(config_file=kubeconfig, client_configuration=config)
    return config


def load_kubectl_configuration(kubeconfig: str | None, *, env: Mapping[str, str] | None = None) -> Any:
    """The client configuration found the way kubectl finds it, for commands people run by hand.

    ``--kubeconfig`` first, then ``$KUBECONFIG`` (a ``:``-separated list, merged), then
    ``~/.kube/config``, and the in-cluster service account only when none of those exists. Read afresh
    on every call (the kubernetes package reads ``$KUBECONFIG`` once, at import). Raises ``ConfigError``
    naming the source; the message never quotes the file (a kubeconfig holds tokens and keys).
    """
    import os

    from provisioner.domain.errors import ConfigError

    environ = os.environ if env is None else env
    config = Configuration()
    if kubeconfig is not None:
        source, path = "--kubeconfig", kubeconfig
    elif environ.get("KUBECONFIG"):
        source, path = "$KUBECONFIG", environ["KUBECONFIG"]
    elif os.path.exists(os.path.expanduser("~/.kube/config")):
        source, path = "~/.kube/config", os.path.expanduser("~/.kube/config")
    else:
        try:
            kube_config.load_incluster_config(client_configuration=config)
        except kube_config.ConfigException as e:
            raise ConfigError(
                "--kubeconfig",
                "no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not in a cluster",
            ) from e
        return config
    missing = [p for p in path.split(os.pathsep) if p and not os.path.isfile(os.path.expanduser(p))]
    if missing:
        raise ConfigError(source, f"{missing[0]!r} is not a readable file")
    try:
        kube_config.load_kube_config(config_file=path, client_configuration=config)
    except Exception as e:  # the library's messages may quote the file: say only which kind of problem
        raise ConfigError(source, f"cannot use {path!r}: {type(e).__name__}") from None
    return config


class KubeAdapter:
    """Raw-JSON access to the resources in ``RESOURCES``. Thread-safe (urllib3 pool)."""

    def __init__(
        self,
        configuration: Any,
        *,
        qps: float = 200.0,
        burst: int = 400,
        request_timeout: float = 30.0,
        pool_size: int = 32,
        clock: Any = time.monotonic,
    ) -> None:
        configuration.connection_pool_maxsize = pool_size
        self._api = ApiClient(configuration)
        self._bucket = TokenBucket(qps=qps, burst=burst)
        self._timeout = request_timeout
        self._watches: set[Any] = set()
        #: requests sent by method (benchmarks and tests read it)
        self.requests_by_method: dict[str, int] = {}
        self._watch_lock = threading.Lock()
        self._clock = clock  # when the auth header is due for a refresh
        self._prepared: tuple[float, str, dict[str, str]] | None = None
        self._prepared_lock = threading.Lock()

    def _prefix_and_headers(self) -> tuple[str, dict[str, str]]:
        """The server URL and the headers every request carries (defaults + auth), refreshed every few s."""
        now = self._clock()
        prepared = self._prepared
        if prepared is not None and now < prepared[0]:
            return prepared[1], prepared[2]
        with self._prepared_lock:
            headers: dict[str, str] = dict(self._api.default_headers)
            # What ApiClient.update_params_for_auth does for "BearerToken" (runs the refresh hook).
            for auth in self._api.configuration.auth_settings().values():
                if auth.get("in") == "header" and auth.get("value"):
                    headers[str(auth["key"])] = str(auth["value"])
            self._prepared = (now + AUTH_REFRESH_SECONDS, str(self._api.configuration.host), headers)
            return self._prepared[1], self._prepared[2]

    def close(self) -> None:
        """Abort open watches and release the connection pool."""
        self.abort_watches()
        self._api.close()

    def abort_watches(self) -> None:
        """Unblock every open watch stream from another thread (used on shutdown)."""
        with self._watch_lock:
            responses = list(self._watches)
        for resp in responses:
            try:
                resp.shutdown()
            except Exception:  # noqa: S110 - best effort: the stream may already be closed
                pass

    # ---- plumbing ------------------------------------------------------------------------------------

    @staticmethod
    def _path(resource: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        res = RESOURCES[resource]
        path = res.prefix
        if res.namespaced and namespace is not None:
            path += f"/namespaces/{namespace}"
        path += f"/{res.plural}"
        if name is not None:
            path += f"/{name}"
        if sub is not None:
            path += f"/{sub}"
        return path

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = None,
        stream: bool = False,
    ) -> Any:
        self._bucket.acquire()
        self.requests_by_method[method] = self.requests_by_method.get(method, 0) + 1
        host, common = self._prefix_and_headers()
        headers = {**common, "Accept": "application/json", "Content-Type": content_type}
        url = host + path + ("?" + urlencode(list(query)) if query else "")
        try:
            resp = self._api.rest_client.request(
                method, url, headers=headers, body=body, _request_timeout=timeout or self._timeout
            )
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise KubeUnavailable(f"{method} {path}: {e}") from e
        except exceptions.ApiException as e:  # raised by the client for some failures
            raise _error_from(method, path, e.status or 0, (e.body or b""), e.headers or {}) from e
        if not 200 <= resp.status < 300:
            raw = resp.read()
            raise _error_from(method, path, resp.status, raw, resp.headers)
        if stream:
            return resp
        return orjson.loads(resp.read() or b"null")

    # ---- verbs ---------------------------------------------------------------------------------------

    def list(
        self, resource: str, *, label_selector: str | None = None, page_size: int = 500
    ) -> tuple[list[dict[str, Any]], str]:
        """All objects (all namespaces) and the collection resourceVersion; follows ``continue``."""
        items: list[dict[str, Any]] = []
        cont: str | None = None
        rv = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", page_size)]
            if cont:
                query.append(("continue", cont))
            if label_selector:
                query.append(("labelSelector", label_selector))
            page = self._call("GET", self._path(resource, None), query=query)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            rv = meta.get("resourceVersion", rv)
            cont = meta.get("continue")
            if not cont:
                return items, rv

    def watch(
        self, resource: str, *, resource_version: str, timeout_seconds: int = 300
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stream ``(type, object)`` after ``resource_version``; raises KubeGone on 410 (relist)."""
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_seconds),
        ]
        path = self._path(resource, None)
        resp = self._call("GET", path, query=query, timeout=(10.0, timeout_seconds + 30.0), stream=True)
        with self._watch_lock:
            self._watches.add(resp.response)
        try:
            pending = b""  # an event split across chunks: its first part
            for chunk in resp.response.stream(65536, decode_content=True):
                if b"\n" not in chunk:
                    pending += chunk
                    continue
                # one split per chunk (splitting off one line at a time copied the rest of a 64 KiB
                # chunk once per event in it)
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    etype = event.get("type", "")
                    obj = event.get("object") or {}
                    if etype == "ERROR":
                        code = obj.get("code", 0)
                        if code == 410:
                            raise KubeGone(obj.get("message", "too old resource version"), status_code=410)
                        raise _error_from("WATCH", path, int(code or 500), json.dumps(obj).encode(), {})
                    yield etype, obj
        except (urllib3.exceptions.HTTPError, OSError, json.JSONDecodeError) as e:
            raise KubeUnavailable(f"watch {path}: {e}") from e
        finally:
            with self._watch_lock:
                self._watches.discard(resp.response)
            resp.response.close()
            resp.response.release_conn()

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        """One object; KubeNotFound if absent."""
        result: dict[str, Any] = self._call("GET", self._path(resource, namespace, name))
        return result

    def create(
        self, resource: str, obj: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        """Create; KubeAlreadyExists on a name clash."""
        result: dict[str, Any] = self._call("POST", self._path(resource, namespace), body=dict(obj))
        return result

    def replace(
        self, resource: str, obj: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        """PUT (resourceVersion in the body makes it conditional)."""
        name = obj["metadata"]["name"]
        result: dict[str, Any] = self._call("PUT", self._path(resource, namespace, name), body=dict(obj))
        return result

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PATCH with the given content type; returns the live object after the patch."""
        result: dict[str, Any] = self._call(
            "PATCH",
            self._path(resource, namespace, name, subresource),
            body=patch,
            content_type=_PATCH_CONTENT_TYPES[patch_type],
        )
        return result

    def delete(
        self,
        resource: str,
        name: str,
        *,
        namespace: str | None = None,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> None:
        """DELETE (uid precondition optional); KubeNotFound if absent."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if propagation:
            body["propagationPolicy"] = propagation
        self._call("DELETE", self._path(resource, namespace, name), body=body)


def _error_from(method: str, path: str, status: int, raw: bytes | str, headers: Any) -> KubeError:
    try:
        status_obj = json.loads(raw) if raw else {}
    except (ValueError, TypeError):
        status_obj = {}
    if not isinstance(status_obj, dict):
        status_obj = {}
    reason = str(status_obj.get("reason") or "")
    message = f"{method} {path}: {status} {reason}: {status_obj.get('message', '')}".strip()
    if status == 404:
        return KubeNotFound(message, status_code=status, reason=reason)
    if status == 409:
        cls = KubeAlreadyExists if reason == "AlreadyExists" else KubeConflict
        return cls(message, status_code=status, reason=reason)
    if status == 410:
        return KubeGone(message, status_code=status, reason=reason)
    if status == 422:
        return KubeInvalid(message, status_code=status, reason=reason)
    if status == 429:
        retry_after = _retry_after(headers)
        return KubeTooManyRequests(message, retry_after=retry_after, status_code=status, reason=reason)
    if status >= 500 or status == 0:
        return KubeUnavailable(message, status_code=status, reason=reason)
    return KubeError(message, status_code=status, reason=reason)


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
