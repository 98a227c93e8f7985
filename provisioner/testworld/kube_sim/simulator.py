"""``KubeSimulator``: the in-process Kubernetes API server that tests, the sandbox and benchmarks start.

It wires the store, the HTTP server, fault injection and the cluster controllers, and offers what a test
needs besides HTTP: a kubeconfig, a ready ``ApiClient``, direct store reads, a request log, and a way to
wait until the controllers have caught up (instead of sleeping).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from kubernetes import client as k8s

from provisioner.testworld.kube_sim.controllers import ClusterControllers, admit_defaults, resolve_enabled
from provisioner.testworld.kube_sim.faults import Faults, RequestRecord
from provisioner.testworld.kube_sim.http import ApiContext, SimServer
from provisioner.testworld.kube_sim.objects import clone
from provisioner.testworld.kube_sim.resources import BY_KEY, RESOURCES, ResourceType
from provisioner.testworld.kube_sim.store import Store
from provisioner.testworld.kube_sim.validation import admit_resize
from provisioner.testworld.kube_sim.watchers import END

Obj = dict[str, Any]
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def resolve_resource(resource: str) -> ResourceType:
    """A resource by plural (``persistentvolumeclaims``), short name (``pvc``), kind or ``group/plural``."""
    if resource in BY_KEY:
        return BY_KEY[resource]
    if "/" in resource:
        return BY_KEY[f"core/{resource.split('/', 1)[1]}" if resource.startswith("/") else resource]
    lowered = resource.lower()
    for rt in RESOURCES:  # core first: "events" means core/v1 events
        if lowered in (rt.plural, rt.singular, rt.kind.lower(), *rt.short_names):
            return rt
    raise KeyError(f"unknown resource {resource!r}")


class KubeSimulator:
    """In-process Kubernetes API server on 127.0.0.1 (ephemeral port). Use as a context manager."""

    def __init__(
        self,
        *,
        history_limit: int = 10_000,
        bookmark_interval: float = 1.0,
        watch_timeout: float = 1800.0,
        controllers: bool | Iterable[str] = True,
        pv_resync_interval: float | None = 15.0,
    ) -> None:
        self.store = Store(history_limit=history_limit)
        self.faults = Faults(self.store)
        self.store.admission.append(admit_defaults(self.store))
        self.store.update_admission.append(
            admit_resize(lambda name: self.store.find(BY_KEY["storage.k8s.io/storageclasses"], "", name))
        )
        self.controllers = ClusterControllers(
            self.store,
            enabled=resolve_enabled(controllers),
            resync_interval=pv_resync_interval,
        )
        self._ctx = ApiContext(
            store=self.store,
            faults=self.faults,
            bookmark_interval=bookmark_interval,
            watch_timeout=watch_timeout,
            stopping=threading.Event(),
        )
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        for ns in INITIAL_NAMESPACES:
            self.store.create(resolve_resource("namespaces"), "", {"metadata": {"name": ns}})

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> KubeSimulator:
        """Start serving (idempotent); returns self."""
        if self._server is None:
            self._ctx.stopping.clear()
            self._server = SimServer(self._ctx)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="kube-sim-http",
                daemon=True,
            )
            self._thread.start()
            self.controllers.start()
        return self

    def stop(self) -> None:
        """End watches, close every connection, join every thread."""
        server, self._server = self._server, None
        if server is None:
            return
        self._ctx.stopping.set()
        for w in self.store.watchers():
            w.control(END)
        server.shutdown()
        server.cut_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.controllers.stop()

    def __enter__(self) -> KubeSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- clients -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("KubeSimulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def configuration(self) -> k8s.Configuration:
        """A client Configuration pointing at this server."""
        config = k8s.Configuration(host=self.url)
        config.api_key = {"BearerToken": "sim-token"}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        return config

    def api_client(self) -> k8s.ApiClient:
        """A new ApiClient for this server; the caller closes it (``with sim.api_client() as api: ...``)."""
        return k8s.ApiClient(self.configuration())

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig (context ``kube-sim``, token auth, plain HTTP) and return its path."""
        target = Path(path)
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube-sim", "cluster": {"server": self.url}}],
            "users": [{"name": "kube-sim", "user": {"token": "sim-token"}}],
            "contexts": [
                {
                    "name": "kube-sim",
                    "context": {"cluster": "kube-sim", "user": "kube-sim", "namespace": "default"},
                }
            ],
            "current-context": "kube-sim",
            "preferences": {},
        }
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        return target

    # --- direct access for tests -------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        """A copy of the stored object, or None."""
        obj = self.store.find(resolve_resource(resource), namespace, name)
        return clone(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Copies of every stored ``resource`` (optionally in one namespace), sorted by namespace/name."""
        objs = self.store.objects(resolve_resource(resource), namespace)
        objs.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return [clone(o) for o in objs]

    def create(self, resource: str, body: Obj, namespace: str = "") -> Obj:
        """Create directly in the store (no HTTP; same validation, admission and events)."""
        return clone(
            self.store.create(resolve_resource(resource), namespace, clone(body), manager="kube-sim")
        )

    def delete(self, resource: str, namespace: str, name: str, **options: Any) -> Obj:
        """Delete directly in the store; ``options`` are DeleteOptions fields (e.g. ``propagationPolicy``)."""
        obj, _ = self.store.delete(resolve_resource(resource), namespace, name, options)
        return clone(obj)

    @property
    def resource_version(self) -> int:
        """The current cluster-wide resourceVersion."""
        return self.store.resource_version

    @property
    def requests(self) -> builtins.list[RequestRecord]:
        """The request log (method, path, query, status, watch), oldest first."""
        return self.faults.requests

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the controllers have handled every change so far."""
        return self.controllers.wait_idle(timeout)

    def resync(self) -> None:
        """Run the PV controller's periodic resync now instead of waiting ``pv_resync_interval``."""
        self.controllers.resync()

    @property
    def controller_errors(self) -> builtins.list[str]:
        """Exceptions raised inside simulator controllers (should stay empty)."""
        return list(self.controllers.errors)
