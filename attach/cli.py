"""``cinder-attach``: run the CSI node plugin, or one stage/unstage from a shell.

This is where the node agent's objects are constructed and wired (settings → runner → rbd/iscsi/devices
→ NodeOps → servicers). ``stage`` and ``unstage`` exist for operators debugging a node and for tests: they
print nothing on success (exit 0) and one clear line on stderr otherwise (exit 1 for a retryable failure,
2 for a final one / bad input). Logs are JSON lines on stderr with secret-looking fields masked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from attach import settings as settings_mod
from attach.devices import Devices
from attach.iscsi import Iscsi
from attach.mount import Mounter
from attach.node import NodeOps, StageRequest
from attach.rbd import Rbd
from attach.runner import REDACTED, Runner
from attach.settings import Settings
from attach.stash import InFlight, Locks, StashStore
from provisioner.domain.errors import ConfigError, ProvisionerError

_SECRET_FIELDS = ("key", "password", "secret", "secrets", "token")


def mask_secret_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask values of fields whose name looks secret (belt and braces)."""
    for name in list(event):
        if any(word in name.lower() for word in _SECRET_FIELDS):
            event[name] = REDACTED
    return event


#: Marks the root handler ``configure_logging`` installed (a second call replaces it).
_HANDLER_MARK = "_cinder_attach_handler"


def configure_logging(level: str = "info", *, stream: Any = None) -> None:
    """JSON lines on stderr; other libraries' stdlib records (grpc's Python side, urllib3) are rendered
    the same way, through the same masking, instead of as bare text in the JSON stream."""
    out = stream or sys.stderr
    stamp = structlog.processors.TimeStamper(fmt="iso")
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, stamp],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                mask_secret_fields,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            stamp,
            mask_secret_fields,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )


def build_ops(settings: Settings, *, env: Mapping[str, str] | None = None) -> NodeOps:
    """Wire the node operations from settings."""
    runner = Runner(default_timeout=settings.command_timeout, env=env)
    _state_dir(settings.state_dir)
    locks = Locks(settings.state_dir)
    devices = Devices(runner=runner)
    return NodeOps(
        stash=StashStore(settings.state_dir),
        locks=locks,
        rbd=Rbd(runner=runner, settings=settings, inflight=InFlight(settings.state_dir)),
        iscsi=Iscsi(runner=runner, settings=settings, locks=locks, devices=devices),
        devices=devices,
        mounter=Mounter(runner=runner, mountinfo=settings.mountinfo),
        kubelet_dir=settings.kubelet_dir,
    )


def _state_dir(path: Path) -> None:
    """Create the state directory (0700) or refuse, naming the setting, when it cannot be one."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise ConfigError("state_dir", f"{path} exists and is not a directory") from None
    except NotADirectoryError:
        raise ConfigError("state_dir", f"{path}: a parent is not a directory") from None
    except PermissionError:
        raise ConfigError("state_dir", f"{path}: permission denied") from None
    if not path.is_dir():
        raise ConfigError("state_dir", f"{path} is not a directory")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cinder-attach", description=__doc__.splitlines()[0])
    settings_mod.add_arguments(parser)
    parser.add_argument("--log-level", default="info")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CSI Identity + Node gRPC server")
    serve.add_argument("--endpoint", required=True, help="unix:///path/to/csi.sock")
    stage = sub.add_parser("stage", help="stage one volume (attach, format if new and blank, mount)")
    stage.add_argument("--volume-context", required=True, type=Path, help="JSON: the PV's volumeAttributes")
    stage.add_argument("--secrets", type=Path, help="JSON: secret key → plain value (in-tree key names)")
    stage.add_argument("--staging-path", required=True)
    stage.add_argument("--volume-id", required=True)
    stage.add_argument("--fs-type", default="")
    stage.add_argument("--mount-flag", action="append", default=[], dest="mount_flags")
    stage.add_argument("--block", action="store_true", help="Block volume mode: attach only, no mount")
    stage.add_argument("--readonly", action="store_true")
    unstage = sub.add_parser("unstage", help="unmount and detach one volume")
    unstage.add_argument("--volume-id", required=True)
    unstage.add_argument("--staging-path", required=True)
    return parser


def _load_json(path: Path, what: str) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{what} {path}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{what} {path}: must be a JSON object of strings")
    return {str(k): str(v) for k, v in data.items()}


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from attach.servicer import build_server

    server = build_server(ops=build_ops(settings), node_id=settings.node_id, endpoint=args.endpoint)
    server.start()
    log = structlog.get_logger("attach.cli")
    log.info("serving", endpoint=args.endpoint, node_id=settings.node_id)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = settings_mod.load(os.environ, vars(args))
        if args.command == "serve":
            return _serve(args, settings)
        ops = build_ops(settings)
        if args.command == "stage":
            ops.stage(
                StageRequest(
                    volume_id=args.volume_id,
                    staging_path=args.staging_path,
                    attributes=_load_json(args.volume_context, "volume context"),
                    secrets=_load_json(args.secrets, "secrets") if args.secrets else {},
                    fs_type=args.fs_type,
                    mount_flags=tuple(args.mount_flags),
                    block=args.block,
                    readonly=args.readonly,
                )
            )
        else:
            ops.unstage(args.volume_id, args.staging_path)
    except ValueError as e:
        print(f"cinder-attach {args.command}: {e}", file=sys.stderr)
        return 2
    except ProvisionerError as e:
        print(f"cinder-attach {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2 if e.final else 1
    except OSError as e:
        print(f"cinder-attach {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
