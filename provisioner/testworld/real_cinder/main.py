"""Entry point of the all-in-one real OpenStack Cinder subprocess (API + scheduler + volume).

Why a module of our own instead of ``cinder-api``/``cinder-scheduler``/``cinder-volume``: the test tier
wants one process, started in seconds, with ``fake:/`` messaging (which only works inside one process),
so all services must share it.  Cinder was not written for that, and this module carries the fixes:

* eventlet monkey patching happens first, before anything else is imported (Cinder requires it; this is
  also why Cinder never runs inside the pytest process);
* ``cinder.service.Service`` keeps ``service_id`` as a *class* attribute, so with several services in one
  process every heartbeat would update the last-created service row and the others (typically
  cinder-volume) would go "down" after ``service_down_time``.  ``_OwnIdService`` restores its own id
  before reporting state;
* volume services start before the scheduler so that the scheduler's start-up request for capabilities
  reaches them and volume creation works as soon as the API answers;
* the database schema is synced here, which saves starting another Cinder process.

Usage: ``python -m provisioner.testworld.real_cinder.main --ready-file F --config-file cinder.conf``.
When everything listens, ``F`` receives ``{"port": <API port>, "pid": <pid>}``.  SIGTERM (or the parent
going away) ends the process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any


def _monkey_patch() -> None:
    from cinder import monkey_patch

    monkey_patch.patch()


def _own_id_service_class() -> Any:
    from cinder import service

    class _OwnIdService(service.Service):  # type: ignore[misc]  # cinder is untyped
        """A cinder Service that reports its own heartbeat even when it shares the process."""

        def report_state(self) -> None:
            service.Service.service_id = self.origin_service_id
            super().report_state()

    return _OwnIdService


def _run(config_args: list[str], ready_file: Path) -> int:
    import logging as python_logging

    from cinder import coordination, objects, rpc, version
    from cinder import service as cinder_service
    from cinder.common import config, constants
    from cinder.db import migration
    from oslo_config import cfg
    from oslo_log import log as logging

    conf = cfg.CONF
    objects.register_all()
    conf(config_args, project="cinder", version=version.version_string())
    config.set_middleware_defaults()
    logging.setup(conf, "cinder")
    python_logging.captureWarnings(True)
    log = logging.getLogger("provisioner.testworld.real_cinder.main")

    migration.db_sync()
    rpc.init(conf)
    coordination.COORDINATOR.start()

    service_class = _own_id_service_class()
    started: list[Any] = []
    for backend in filter(None, conf.enabled_backends):
        volume = service_class.create(
            host=f"{conf.host}@{backend}",
            service_name=backend,
            binary=constants.VOLUME_BINARY,
            coordination=True,
        )
        volume.start()
        started.append(volume)
    scheduler = service_class.create(binary=constants.SCHEDULER_BINARY)
    scheduler.start()
    started.append(scheduler)
    api = cinder_service.WSGIService("osapi_volume")
    api.start()

    stopping: list[int] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    parent = os.getppid()
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": api.port, "pid": os.getpid()}))
    tmp.replace(ready_file)
    log.info("all-in-one cinder ready on port %s with %d services", api.port, len(started))

    import eventlet

    while not stopping and os.getppid() == parent:
        eventlet.sleep(0.2)
    log.info("all-in-one cinder stopping (signal %s)", stopping[0] if stopping else "parent gone")
    api.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Start API, scheduler and one volume service per enabled backend in this process."""
    _monkey_patch()
    parser = argparse.ArgumentParser(prog="real_cinder_main")
    parser.add_argument("--ready-file", type=Path, required=True)
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        code = _run(rest, ours.ready_file)
    except BaseException:  # report start-up failures in the log the launcher shows, then really exit
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Green threads (RPC servers, timers, the WSGI pool) would keep a normal exit waiting; the caller
    # asked us to go, and sqlite commits are already durable.
    os._exit(code)


if __name__ == "__main__":
    main()
