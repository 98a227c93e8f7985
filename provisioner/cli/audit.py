"""``cinder-provisioner audit``: every Cinder volume, snapshot and backup of the cluster, accounted for.

Reads the provisioner's configuration (clouds, cluster id) and a kubeconfig like ``run``; prints findings as
a table (default), JSON (``docs/audit.md``) or CSV. Exit 0: clean; 1: findings; 2: an error (bad
configuration or arguments, Kubernetes or a cloud unreadable, a failed delete). ``--fix`` deletes orphans
older than ``--grace`` that carry our cluster tag, after re-checking each one; a dry run unless ``--yes``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from provisioner.domain.errors import ConfigError, KubeError, ProvisionerError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``24h``, ``7d`` → seconds (argparse type)."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 30m, 24h, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="compare Cinder volumes, snapshots and backups with the cluster (exit 0 clean, 1 findings, "
        "2 error)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("--config", default=os.environ.get("CINDER_PROVISIONER_CONFIG"), help="YAML config file")
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig path (default: in-cluster, then ~/.kube/config)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument("-o", "--output", choices=("table", "json", "csv"), default="table")
    p.add_argument("--kind", default=None, help="only these finding kinds (comma-separated)")
    p.add_argument(
        "--cloud",
        action="append",
        default=None,
        metavar="NAME",
        help="audit this cloud (repeatable; default: all)",
    )
    p.add_argument("--all-clusters", action="store_true", help="include volumes tagged for other clusters")
    p.add_argument("--untagged", action="store_true", help="include pvc-* volumes without a cluster tag")
    p.add_argument(
        "--stuck-after",
        type=parse_duration,
        default=3600.0,
        metavar="DURATION",
        help="a transitional status older than this is 'stuck' (default 1h)",
    )
    p.add_argument(
        "--fix",
        default=None,
        metavar="KINDS",
        help="delete findings of these kinds: orphan-volume,orphan-snapshot,orphan-backup "
        "(a dry run without --yes)",
    )
    p.add_argument("--yes", action="store_true", help="really delete (with --fix)")
    p.add_argument(
        "--grace",
        type=parse_duration,
        default=24 * 3600.0,
        metavar="DURATION",
        help="--fix leaves anything younger than this alone (default 24h)",
    )
    p.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="at most N Cinder calls at once (default 4)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress on stderr (auto: only on a terminal)",
    )


class Progress:
    """One self-overwriting line on a terminal; nothing at all elsewhere."""

    def __init__(self, stream: TextIO, *, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self.enabled = enabled
        self._clock = clock
        self._last = float("-inf")
        self._counts: dict[str, int] = {}

    def __call__(self, stage: str, count: int) -> None:
        if not self.enabled:
            return
        self._counts[stage] = count
        now = self._clock()
        if now - self._last < 0.1:
            return
        self._last = now
        text = "  ".join(f"{k} {v}" for k, v in self._counts.items())
        self._stream.write("\r\x1b[2K" + f"reading: {text}"[:200])
        self._stream.flush()

    def done(self) -> None:
        if self.enabled and self._counts:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()


def run(args: argparse.Namespace) -> int:
    """Audit, print, maybe fix; the exit code."""
    from provisioner.config.settings import load_config, parse_set_overrides
    from provisioner.telemetry import logs

    try:
        config = load_config(args.config, overrides=parse_set_overrides(args.set))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs.configure("warning" if config.log_level == "info" else config.log_level)
    try:
        clouds = _clouds(config, args.cloud, args.concurrency)
        from provisioner.adapters.kube import KubeAdapter, load_client_configuration

        kube = KubeAdapter(
            load_client_configuration(args.kubeconfig), qps=config.kube_qps, burst=config.kube_burst
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # kubeconfig problems come as the client's own exceptions
        print(f"error: kubeconfig: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        return audit_command(
            args,
            clouds=clouds,
            kube=kube,
            cluster_id=config.cluster_id,
            default_cloud=config.default_cloud,
            provisioner_name=config.provisioner_name,
            request_id=_request_id,
        )
    finally:
        kube.close()


def _request_id() -> str | None:
    from provisioner.adapters.cinder.session import last_response_headers

    return last_response_headers().get("x-openstack-request-id")


def _clouds(config: Any, wanted: list[str] | None, concurrency: int) -> dict[str, Any]:
    from provisioner.adapters.cinder.client import make_cinder

    names = wanted or sorted(config.clouds)
    for name in names:
        config.cloud(name)  # ConfigError naming the unknown cloud and the known ones
    # The cap holds for every Cinder call of the audit: lists, re-checks and deletes.
    return {name: make_cinder(config.clouds[name], max_in_flight=concurrency) for name in names}


def audit_command(
    args: argparse.Namespace,
    *,
    clouds: Mapping[str, Any],
    kube: Any,
    cluster_id: str,
    default_cloud: str,
    provisioner_name: str,
    request_id: Callable[[], str | None] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    wall: Callable[[], float] = time.time,
) -> int:
    """The command once its objects are built (tests call this with the simulators' clients)."""
    from provisioner.audit import fix as fixing
    from provisioner.audit import render
    from provisioner.audit.collect import AuditError, collect
    from provisioner.audit.decide import Options, audit
    from provisioner.audit.model import FIXABLE, parse_kinds

    stdout = out or sys.stdout
    stderr = err or sys.stderr
    try:
        kinds = parse_kinds(args.kind) if args.kind else None
    except ValueError as e:
        print(f"error: --kind: {e}", file=stderr)
        return 2
    try:
        fix_kinds = parse_kinds(args.fix, allowed=FIXABLE) if args.fix else None
    except ValueError as e:
        print(f"error: --fix: {e}", file=stderr)
        return 2
    if args.yes and fix_kinds is None:
        print("error: --yes: only meaningful with --fix", file=stderr)
        return 2
    tty = stderr.isatty() if hasattr(stderr, "isatty") else False
    progress = Progress(stderr, enabled=args.progress == "always" or (args.progress == "auto" and tty))
    options = Options(
        cluster_id=cluster_id,
        default_cloud=default_cloud,
        now=wall(),
        provisioner_name=provisioner_name,
        all_clusters=args.all_clusters,
        untagged=args.untagged,
        stuck_after_seconds=args.stuck_after,
    )
    try:
        observed = collect(
            clouds=clouds, kube=kube, options=options, progress=progress, max_workers=args.concurrency
        )
    except (AuditError, KubeError, ProvisionerError) as e:
        progress.done()
        print(f"error: {e}", file=stderr)
        return 2
    progress.done()
    report = audit(observed, options).only(kinds)
    fixes = None
    if fix_kinds is not None:
        fix_options = fixing.FixOptions(
            kinds=fix_kinds, cluster_id=cluster_id, now=wall(), grace_seconds=args.grace
        )
        try:
            fixes = fixing.execute(
                fixing.plan(report.findings, fix_options),
                clouds=clouds,
                kube=kube,
                fix=fix_options,
                audit=options,
                yes=args.yes,
                max_workers=args.concurrency,
                request_id=request_id or _request_id,
            )
        except (KubeError, ProvisionerError) as e:
            print(f"error: --fix: {e}", file=stderr)
            return 2
    if args.output == "json":
        stdout.write(render.to_json(report, fixes))
    elif args.output == "csv":
        stdout.write(render.to_csv(report))
        if fixes is not None:
            stderr.write(render.fix_table(fixes, yes=args.yes))
    else:
        stdout.write(render.table(report))
        if fixes is not None:
            stdout.write("\n" + render.fix_table(fixes, yes=args.yes))
    for problem in report.errors:
        print(f"error: {problem}", file=stderr)
    if report.errors or any(r.action == "failed" for r in fixes or ()):
        return 2
    return 1 if report.findings else 0
