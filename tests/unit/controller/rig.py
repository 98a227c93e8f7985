"""A real ``Controller`` over in-memory fakes, for the worker, retry-discipline and health tests.

- ``GatedSource``: a ListWatcher whose lists wait for ``gate`` (so "caches not synced" can be held) and
  whose watches stay open, quiet, until ``close()``; events are fed through ``Informer._apply``, the
  informer's own watch-event path, so handlers and caches see exactly what a watch would deliver.
- ``ScriptedFlow``: a reconcile function that records its calls and answers from a script.
- ``make_rig``: the controller (fake clock shared by controller, queue and context) plus its parts.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from provisioner.domain import names
from provisioner.domain.outcome import DONE, Outcome
from provisioner.flows.context import Context
from provisioner.runtime.controller import Controller, Key
from provisioner.runtime.informer import Informer
from provisioner.runtime.workqueue import WorkQueue
from tests.fakes.ports import FakeClock, make_context

Obj = dict[str, Any]


class GatedSource:
    """Lists (empty unless ``objects`` says otherwise) once ``gate`` is set; watches block until closed."""

    def __init__(self, *, open_gate: bool = True) -> None:
        self.gate = threading.Event()
        if open_gate:
            self.gate.set()
        self.closed = threading.Event()
        self.objects: dict[str, list[Obj]] = {}

    def list(self, resource: str) -> tuple[list[Obj], str]:
        self.gate.wait()
        return [copy.deepcopy(o) for o in self.objects.get(resource, [])], "1"

    def watch(self, resource: str, *, resource_version: str, timeout_seconds: int = 300) -> Iterator[Any]:
        self.closed.wait(timeout_seconds)
        return iter(())

    def close(self) -> None:
        self.gate.set()
        self.closed.set()


Answer = Outcome | BaseException | Callable[[str], Outcome]


@dataclass
class ScriptedFlow:
    """Answers ``answers[key]`` (an Outcome, an exception to raise, or a callable), else ``default``."""

    default: Answer = DONE
    answers: dict[str, Answer] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, ctx: Context, key: str) -> Outcome:
        with self.lock:
            self.calls.append(key)
        answer = self.answers.get(key, self.default)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, Outcome):
            return answer
        return answer(key)

    def count(self, key: str) -> int:
        with self.lock:
            return self.calls.count(key)


@dataclass
class Rig:
    controller: Controller
    source: GatedSource
    claims: ScriptedFlow
    volumes: ScriptedFlow
    clock: FakeClock
    pauses: list[float]

    @property
    def metrics(self) -> Any:
        return self.controller.ctx.metrics

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else float(value)

    def apply(self, resource: str, obj: Obj, etype: str = "MODIFIED") -> None:
        """Deliver one watch event for ``obj`` to the informer of ``resource``."""
        informer: Informer = {
            "persistentvolumeclaims": self.controller.pvcs,
            "persistentvolumes": self.controller.pvs,
            "storageclasses": self.controller.classes,
        }[resource]
        informer._apply(etype, copy.deepcopy(obj))

    def step(self) -> int:
        """One worker iteration without blocking; how many flow calls it made (0: nothing was ready)."""
        before = len(self.claims.calls) + len(self.volumes.calls)
        self.controller.run_once("worker-test", timeout=0)
        return len(self.claims.calls) + len(self.volumes.calls) - before

    def drain(self, limit: int = 100) -> int:
        """Run worker iterations until nothing is ready; how many flow calls that made."""
        calls = 0
        for _ in range(limit):
            made = self.step()  # get() also promotes keys whose delay is over
            if made == 0 and self.controller.queue.depth() == 0:
                return calls
            calls += made
        raise AssertionError("queue never drained")

    def start(self) -> None:
        """Start informers (the gate decides when they sync)."""
        self.controller.start_informers()

    def stop(self) -> None:
        self.source.close()
        self.controller.stop(abort_watches=self.source.close, timeout=5.0)


def make_rig(
    *,
    workers: int = 2,
    queue: WorkQueue[Key] | None = None,
    clock: FakeClock | None = None,
    open_gate: bool = True,
    is_leader: Callable[[], bool] | None = None,
    stuck_after_seconds: float = 300.0,
    real_clock: bool = False,
) -> Rig:
    """A Controller with scripted flows; ``real_clock`` for tests whose worker threads must see time move."""
    fake = clock or FakeClock()
    source = GatedSource(open_gate=open_gate)
    claims, volumes = ScriptedFlow(), ScriptedFlow()
    pauses: list[float] = []

    def context(pvcs: Informer, pvs: Informer, classes: Informer) -> Context:
        world = make_context(
            pvcs=pvcs,  # type: ignore[arg-type]
            pvs=pvs,  # type: ignore[arg-type]
            classes=classes,  # type: ignore[arg-type]
            clock=fake,
            live_caches=False,
            is_leader=is_leader,
        )
        return world.ctx

    kwargs: dict[str, Any] = {} if real_clock else {"clock": fake}
    controller = Controller(
        source=source,
        make_context=context,
        workers=workers,
        queue=queue,
        stuck_after_seconds=stuck_after_seconds,
        claim_flow=claims,
        volume_flow=volumes,
        pause=pauses.append,
        **kwargs,
    )
    return Rig(
        controller=controller, source=source, claims=claims, volumes=volumes, clock=fake, pauses=pauses
    )


def claim(name: str = "data", *, uid: str = "u-1", annotations: dict[str, str] | None = None) -> Obj:
    """A Pending claim for our provisioner."""
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid,
            "resourceVersion": "1",
            "annotations": {
                names.ANN_STORAGE_PROVISIONER: names.DEFAULT_PROVISIONER_NAME,
                **(annotations or {}),
            },
        },
        "spec": {"storageClassName": "rbd", "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"},
    }


def our_pv(claim_obj: Obj) -> Obj:
    """The PV we would create for ``claim_obj``."""
    meta = claim_obj["metadata"]
    return {
        "metadata": {
            "name": names.pv_name_for(meta["uid"]),
            "resourceVersion": "1",
            "annotations": {names.ANN_PROVISIONED_BY: names.DEFAULT_PROVISIONER_NAME},
            "finalizers": [names.PV_VOLUME_FINALIZER],
        },
        "spec": {
            "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
            "storageClassName": "rbd",
            "persistentVolumeReclaimPolicy": "Delete",
        },
        "status": {"phase": "Pending"},
    }


def bump(obj: Obj, annotations: dict[str, str | None] | None = None, **top: Any) -> Obj:
    """A copy with a new resourceVersion, ``annotations`` merged (None removes one), ``top`` keys set."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta["resourceVersion"] = str(int(meta.get("resourceVersion", "1")) + 1)
    ann = dict(meta.get("annotations") or {})
    for k, v in (annotations or {}).items():
        if v is None:
            ann.pop(k, None)
        else:
            ann[k] = v
    meta["annotations"] = ann
    out.update(top)
    return out
