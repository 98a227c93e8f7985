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
* the database schema is synced here, which saves starting another Cinder process;
* cinder-backup (posix driver: backups are files) runs here too. It starts before the scheduler and
  reports its capabilities once its driver is initialised (the scheduler only picks backup hosts that
  reported), and its connector is built without os-brick's privileged probes (no ``sudo`` here); the
  file driver answers that connector with a ``local`` connection to the volume's file.

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
import time
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


def _local_connector_properties(my_ip: str) -> Any:
    """cinder-backup's own connector without os-brick's probes.

    os-brick's ``get_connector_properties`` asks every connector type for its properties, and some
    (nvmeof) start a privsep daemon through ``sudo`` — absent here. cinder-backup only needs a connector
    that names this host: the file driver answers it with a ``local`` connection to the volume's file.
    """
    import socket

    from provisioner.testworld.real_cinder.file_driver import BACKUP_INITIATOR

    def properties(multipath: bool = False, enforce_multipath: bool = False) -> dict[str, Any]:
        return {
            "platform": "x86_64",
            "os_type": "linux",
            "ip": my_ip,
            "host": socket.gethostname(),
            "multipath": False,
            "enforce_multipath": False,
            "initiator": BACKUP_INITIATOR,
            "do_local_attach": True,
        }

    return properties


def _publish_backup_capabilities(manager: Any, log: Any, timeout: float = 30.0) -> None:
    """Wait (green) for the backup driver to initialise, then report it to the scheduler once.

    cinder-backup initialises its driver in a looping call, so its start-up report says "not working";
    the next periodic report is a minute away, and until then the scheduler knows no backup host.
    """
    import eventlet
    from cinder import context

    deadline = time.monotonic() + timeout
    while not manager.is_working():
        if time.monotonic() > deadline:
            raise RuntimeError("the cinder-backup driver did not initialise")
        eventlet.sleep(0.05)
    manager.publish_service_capabilities(context.get_admin_context())
    eventlet.sleep(0.2)  # let the fake transport deliver the report before we say "ready"
    log.info("cinder-backup driver %s reported to the scheduler", manager.driver_name)


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

    from cinder.volume import volume_utils

    volume_utils.brick_get_connector_properties = _local_connector_properties(conf.my_ip)
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
    # cinder-backup (the launcher configures the posix driver: backups are files in a directory). Like the
    # volume services it starts before the scheduler, whose start-up capability request it must answer:
    # the scheduler picks backup hosts only from services that reported (else "Service not found").
    backup = service_class.create(binary=constants.BACKUP_BINARY, coordination=True, service_name="backup")
    backup.start()
    started.append(backup)
    scheduler = service_class.create(binary=constants.SCHEDULER_BINARY)
    scheduler.start()
    started.append(scheduler)
    api = cinder_service.WSGIService("osapi_volume")
    api.start()
    _publish_backup_capabilities(backup.manager, log)

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
