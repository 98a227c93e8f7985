"""Construct the controller from configuration: the one place adapters meet the core."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from provisioner.config.settings import ProvisionerConfig
from provisioner.domain.model import Connector
from provisioner.flows.context import Context, Hints, Settings
from provisioner.ports import CinderPort, Clock
from provisioner.runtime.controller import Controller
from provisioner.runtime.informer import Informer
from provisioner.telemetry.events import EventRecorder
from provisioner.telemetry.metrics import Metrics, make_metrics


class SystemClock:
    """The real clock (``ports.Clock``); tests pass a fake one to ``build_controller``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


def make_clouds(config: ProvisionerConfig, metrics: Metrics) -> dict[str, CinderPort]:
    """One Cinder adapter per configured cloud, all reporting to ``metrics``."""
    from provisioner.adapters.cinder.client import make_cinder

    return {
        name: make_cinder(
            cloud,
            max_in_flight=config.cinder_max_in_flight,
            observer=metrics.observe_cinder,
            slot_observer=metrics.observe_cinder_slot,
        )
        for name, cloud in config.clouds.items()
    }


def settings_from(config: ProvisionerConfig, *, identity: str = "", **overrides: float) -> Settings:
    """Controller settings from the validated configuration."""
    c = config.connector
    return Settings(
        provisioner_name=config.provisioner_name,
        cluster_id=config.cluster_id,
        secret_namespace=config.secret_namespace,
        connector=Connector(host=c.host, ip=c.ip, initiator=c.initiator, multipath=c.multipath),
        default_cloud=config.default_cloud,
        create_deadline_seconds=config.create_deadline_seconds,
        delete_deadline_seconds=config.delete_deadline_seconds,
        max_error_retries=config.max_error_retries,
        identity=identity,
        **{
            "final_retry_seconds": config.final_retry_seconds,
            # A create another replica sent can land up to its HTTP timeout later: the slowest cloud's
            # timeout + 5 s margin (35 s at the default 30 s; a fixed 35 s was too short for a cloud
            # configured with a longer timeout).
            "create_in_flight_seconds": max((c.timeout_seconds for c in config.clouds.values()), default=30.0)
            + 5.0,
            **overrides,
        },
    )


def build_controller(
    config: ProvisionerConfig,
    kube: object,
    *,
    clouds: Mapping[str, CinderPort] | None = None,
    metrics: Metrics | None = None,
    is_leader: Callable[[], bool] = lambda: True,
    identity: str = "",
    resync_seconds: float = 600.0,
    watch_timeout_seconds: int = 300,
    checkpoint: Callable[[str], None] = lambda point: None,
    stuck_after_seconds: float = 300.0,
    clock: Clock | None = None,
    **settings_overrides: float,
) -> Controller:
    """A ready-to-start Controller (informers not yet started); ``clock`` is the one source of time of
    the controller, its queue, its flows and its event recorder."""
    clk = clock or SystemClock()
    m = metrics or make_metrics()
    cinders = dict(clouds) if clouds is not None else make_clouds(config, m)
    recorder = EventRecorder(
        kube,  # type: ignore[arg-type]
        component=config.provisioner_name,
        instance=identity,
        clock=clk.monotonic,
    )

    def make_context(pvcs: Informer, pvs: Informer, classes: Informer) -> Context:
        return Context(
            settings=settings_from(config, identity=identity, **settings_overrides),
            kube=kube,  # type: ignore[arg-type]
            clouds=cinders,
            pvcs=pvcs,
            pvs=pvs,
            classes=classes,
            events=recorder,
            metrics=m,
            hints=Hints(clock=clk.monotonic),
            is_leader=is_leader,
            checkpoint=checkpoint,
            clock=clk.monotonic,
            wall=clk.wall,
        )

    return Controller(
        source=kube,  # type: ignore[arg-type]
        make_context=make_context,
        workers=config.workers,
        resync_seconds=resync_seconds,
        watch_timeout_seconds=watch_timeout_seconds,
        stuck_after_seconds=stuck_after_seconds,
        clock=clk.monotonic,
    )
