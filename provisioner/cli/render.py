"""``cinder-provisioner render``: print the PV (and Secret) the provisioner would create, offline.

Why: when a class misbehaves an admin wants to see what a given Cinder export turns into without a
cluster or a cloud. This runs the controller's own builder (``mapping.build_objects``) on files: the
connection info exactly as Cinder returns it, the StorageClass and the PVC as Kubernetes objects.

A claim that adopts a volume (``netvol.io/adopt-volume``) goes through the controller's own decision
(``flows.adopt.check_adoption``): with ``--volume`` (the Cinder volume as JSON) render says exactly whether
the controller would adopt it and refuses like the controller (exit 2, the Warning's text); without it, the
claim-side checks still run and a note on stderr says what the volume must be for the adoption to happen.

Exit 0 with a ``v1/List`` on stdout; on bad input exit 2 with one ``error: <field>: <message>`` line on
stderr and nothing on stdout. The printed Secret carries the real key material (cephx key, CHAP secret,
base64-encoded as the API stores it) because that is what would be created: treat the output like the
Secret itself. Nothing is logged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from provisioner.adapters.cinder.convert import to_volume
from provisioner.config.documents import DocumentError, load_yaml, read_text
from provisioner.domain import names
from provisioner.domain.errors import CinderError, InvalidInput
from provisioner.domain.model import ConnectionInfo, Volume
from provisioner.domain.params import ClassParams, parse_class_fields, parse_class_parameters
from provisioner.domain.quantity import MAX_GIB, requested_size_gib
from provisioner.flows.adopt import ADOPT_FIELD, Refuse, adopt_volume_id, check_adoption, check_claim
from provisioner.mapping.build import ContentSource, ProvisionedVolume, build_objects, requested_content

#: Used when neither --volume-id nor the connection info's data.volume_id names the Cinder volume.
PLACEHOLDER_VOLUME_ID: Final = "00000000-0000-0000-0000-000000000000"
#: Used when the PVC file has no metadata.uid (hand-written claims usually have none).
PLACEHOLDER_PVC_UID: Final = "00000000-0000-0000-0000-000000000001"
DEFAULT_SECRET_NAMESPACE: Final = "cinder-provisioner"  # noqa: S105 - a namespace, not a secret
DEFAULT_CLOUD: Final = "default"
EXIT_BAD_INPUT: Final = 2


def add_parser(subparsers: Any) -> None:
    """Register ``render`` on the top-level parser."""
    parser = subparsers.add_parser(
        "render",
        help="print the PV/Secret a Cinder connection info + StorageClass + PVC would produce",
        description=(
            "Print, as a v1 List, the PersistentVolume (and provisioner-owned Secret) the controller would "
            "create. The Secret contains real key material from the connection info: handle the output "
            "like the Secret. Exit 2 with one line on stderr naming the field when the input is refused."
        ),
    )
    parser.add_argument(
        "--connection-info",
        required=True,
        type=Path,
        metavar="CI.json",
        help="what Cinder returned: {driver_volume_type, data} (a connection_info wrapper is fine)",
    )
    parser.add_argument(
        "--storage-class",
        required=True,
        type=Path,
        metavar="SC.yaml",
        help="the StorageClass object (YAML or JSON)",
    )
    parser.add_argument(
        "--pvc",
        required=True,
        type=Path,
        metavar="PVC.yaml",
        help="the PersistentVolumeClaim object (YAML or JSON)",
    )
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format")
    parser.add_argument("--volume-id", help="Cinder volume id (default: data.volume_id, else a placeholder)")
    parser.add_argument("--attachment-id", help="v3 attachment id (export mode 'attachment'; default legacy)")
    parser.add_argument(
        "--initiator-name", help="the connector's initiator IQN (default: the config default)"
    )
    parser.add_argument(
        "--provisioner-name",
        default=names.DEFAULT_PROVISIONER_NAME,
        help="our StorageClass provisioner name (default: %(default)s)",
    )
    parser.add_argument(
        "--size-gib", type=int, help="volume size in GiB (default: the claim's request, rounded up)"
    )
    parser.add_argument(
        "--secret-namespace",
        default=DEFAULT_SECRET_NAMESPACE,
        help="default namespace for Secrets when the class sets none (default: %(default)s)",
    )
    parser.add_argument(
        "--cloud",
        default=DEFAULT_CLOUD,
        help="cloud name recorded when the class sets none (default: %(default)s)",
    )
    parser.add_argument(
        "--volume",
        type=Path,
        metavar="VOLUME.json",
        help='for a claim with netvol.io/adopt-volume: the Cinder volume (API {"volume": …} or '
        "`openstack volume show -f json`), checked exactly as the controller checks it",
    )
    parser.add_argument(
        "--cluster-id",
        help="the controller's cluster_id (needed with --volume: another cluster's volumes are refused)",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """The ``v1/List`` text, and notes for stderr (what the output assumes)."""

    text: str
    notes: tuple[str, ...] = field(default=())


def run(args: argparse.Namespace) -> int:
    """Render and print; exit 0, or 2 with one ``error: field: message`` line on stderr."""
    try:
        result = rendered(
            connection_info=_load(args.connection_info, "--connection-info"),
            storage_class=_load(args.storage_class, "--storage-class"),
            pvc=_load(args.pvc, "--pvc"),
            output=args.output,
            volume_id=args.volume_id,
            attachment_id=args.attachment_id,
            initiator_name=args.initiator_name,
            provisioner_name=args.provisioner_name,
            size_gib=args.size_gib,
            secret_namespace=args.secret_namespace,
            cloud=args.cloud,
            volume=None if args.volume is None else _load(args.volume, "--volume"),
            cluster_id=args.cluster_id,
        )
    except InvalidInput as e:
        message = " ".join(str(e).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(result.text)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def render(**kwargs: Any) -> str:
    """The ``v1/List`` text only (see ``rendered``)."""
    return rendered(**kwargs).text


def rendered(
    *,
    connection_info: Any,
    storage_class: Any,
    pvc: Any,
    output: str = "yaml",
    volume_id: str | None = None,
    attachment_id: str | None = None,
    initiator_name: str | None = None,
    provisioner_name: str = names.DEFAULT_PROVISIONER_NAME,
    size_gib: int | None = None,
    secret_namespace: str = DEFAULT_SECRET_NAMESPACE,
    cloud: str = DEFAULT_CLOUD,
    volume: Any = None,
    cluster_id: str | None = None,
) -> Rendered:
    """The ``v1/List`` text (+ notes) for already-loaded objects; raises ``InvalidInput`` naming the field."""
    if not isinstance(connection_info, Mapping):
        raise InvalidInput("--connection-info", "must hold a JSON object")
    ci = ConnectionInfo.from_wire(connection_info)
    sc = _object(storage_class, "--storage-class", "StorageClass")
    claim = _object(pvc, "--pvc", "PersistentVolumeClaim")
    for part in ("metadata", "spec"):  # the API server guarantees both; a hand-written file may not
        if not isinstance(claim.get(part), Mapping):
            raise InvalidInput(part, f"the claim's {part} must be a mapping")
    fields = parse_class_fields(sc)
    if fields.provisioner != provisioner_name:
        raise InvalidInput(
            "provisioner",
            f"the class names {fields.provisioner!r}, not {provisioner_name!r}: the controller would ignore "
            "this claim (see --provisioner-name)",
        )
    params = parse_class_parameters(sc.get("parameters"), default_secret_namespace=secret_namespace)
    claim = _with_identity(claim)
    if size_gib is not None and not 1 <= size_gib <= MAX_GIB:
        raise InvalidInput("--size-gib", f"must be between 1 and {MAX_GIB}")
    data_volume_id = ci.data.get("volume_id")
    given_volume_id = volume_id
    if not volume_id:
        volume_id = (
            data_volume_id if isinstance(data_volume_id, str) and data_volume_id else PLACEHOLDER_VOLUME_ID
        )
    if initiator_name is None:
        from provisioner.config.settings import DEFAULT_INITIATOR

        initiator_name = DEFAULT_INITIATOR
    notes: tuple[str, ...] = ()
    size = size_gib if size_gib is not None else requested_size_gib(claim)
    zone, multiattach = params.availability_zone, params.multiattach
    adopt_id = adopt_volume_id(claim)
    if adopt_id is not None:
        adopted, notes = _adoption(
            claim,
            fields.name,
            params,
            adopt_id=adopt_id,
            volume=volume,
            cluster_id=cluster_id,
            requested_gib=requested_size_gib(claim),
            cloud=params.cloud or cloud,
        )
        if given_volume_id and given_volume_id != adopt_id:
            raise InvalidInput("--volume-id", f"the claim adopts volume {adopt_id!r} ({ADOPT_FIELD})")
        volume_id = str(adopt_id)
        if adopted is not None:
            if size_gib is not None and size_gib != adopted.size_gib:
                raise InvalidInput("--size-gib", f"the adopted volume has {adopted.size_gib} GiB (--volume)")
            size, zone = adopted.size_gib, adopted.availability_zone
            multiattach = adopted.multiattach or params.multiattach
    provisioned = ProvisionedVolume(
        volume_id=volume_id,
        size_gib=size,
        cloud=params.cloud or cloud,
        attachment_id=attachment_id,
        export_mode="attachment" if attachment_id else "legacy",
        initiator_name=initiator_name,
        content_source="adopted" if adopt_id is not None else content_source_of(claim),
        availability_zone=zone,
        multiattach=multiattach,
    )
    mapped = build_objects(
        connection_info=ci,
        storage_class=sc,
        pvc=claim,
        params=params,
        volume=provisioned,
        provisioner_name=provisioner_name,
    )
    items = [mapped.pv] if mapped.secret is None else [mapped.pv, mapped.secret]
    document = {"apiVersion": "v1", "kind": "List", "items": items}
    if output == "json":
        return Rendered(text=json.dumps(document, indent=2) + "\n", notes=notes)
    return Rendered(
        text=str(yaml.safe_dump(document, sort_keys=False, default_flow_style=False)), notes=notes
    )


def _adoption(
    claim: Mapping[str, Any],
    class_name: str,
    params: ClassParams,
    *,
    adopt_id: object,
    volume: Any,
    cluster_id: str | None,
    requested_gib: int,
    cloud: str,
) -> tuple[Volume | None, tuple[str, ...]]:
    """The controller's adoption decision: the volume to adopt (None = not given) and notes, or refuse.

    Raises the controller's refusal as ``InvalidInput`` (the Warning's text): the claim-side checks always,
    the volume checks when ``--volume`` is given.
    """
    metadata = _mapping(claim.get("metadata"))
    spec = _mapping(claim.get("spec"))
    has_data_source = bool(spec.get("dataSource") or spec.get("dataSourceRef"))
    has_restore = bool(_mapping(metadata.get("annotations")).get(names.ANN_RESTORE_FROM_SNAPSHOT))
    if volume is None:
        refused = check_claim(
            adopt_id=adopt_id,
            allow=params.allow_adoption,
            storage_class=class_name,
            has_data_source=has_data_source,
            has_restore=has_restore,
        )
        if refused is not None:
            raise refused.error()
        of_type = f", of volume type {params.volume_type!r}" if params.volume_type else ""
        return None, (
            f"would adopt volume {adopt_id} if it is available, unattached, untagged{of_type} and "
            f"≥ {requested_gib} GiB (the PV gets the volume's size); pass --volume to check it",
        )
    if not cluster_id:
        raise InvalidInput("--cluster-id", "needed with --volume: the controller's cluster_id")
    candidate = _volume(volume)
    if candidate.id != adopt_id:
        raise InvalidInput("--volume", f"holds volume {candidate.id!r}, the claim adopts {adopt_id!r}")
    decision = check_adoption(
        adopt_id=adopt_id,
        allow=params.allow_adoption,
        storage_class=class_name,
        has_data_source=has_data_source,
        has_restore=has_restore,
        volume=candidate,
        claim_uid=str(metadata.get("uid")),
        claim_namespace=str(metadata.get("namespace")),
        claim_name=str(metadata.get("name")),
        cluster_id=cluster_id,
        requested_gib=requested_gib,
        class_type=params.volume_type,
        cloud=cloud,
    )
    if isinstance(decision, Refuse):
        raise decision.error()
    return decision.volume, ()


def _volume(raw: Any) -> Volume:
    """A Cinder volume from the API's ``{"volume": …}`` or ``openstack volume show -f json``."""
    if isinstance(raw, Mapping) and isinstance(raw.get("volume"), Mapping):
        raw = raw["volume"]
    if not isinstance(raw, Mapping) or not raw.get("id"):
        raise InvalidInput("--volume", "must hold one Cinder volume object with an id")
    fields = dict(raw)
    fields.setdefault("volume_type", fields.get("type"))  # the openstack CLI's spelling
    fields.setdefault("metadata", fields.get("properties"))
    try:
        return to_volume(fields)
    except CinderError as e:
        raise InvalidInput("--volume", f"unreadable Cinder volume: {e}") from None


def content_source_of(pvc: Mapping[str, Any]) -> ContentSource:
    """What a new volume's data comes from, as the controller would record it for the node agent.

    An adopting claim never gets here: ``rendered`` records "adopted" only once the adoption was decided.
    """
    return requested_content(pvc)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _load(path: Path, option: str) -> Any:
    """One YAML/JSON document, read with the configuration's limits (size, UTF-8, depth, aliases)."""
    try:
        return load_yaml(read_text(path), source=str(path))
    except DocumentError as e:
        raise InvalidInput(option, str(e)) from None


def _object(obj: Any, option: str, kind: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise InvalidInput(option, f"must hold one {kind} object")
    if obj.get("kind", kind) != kind:
        raise InvalidInput("kind", f"{option} holds a {obj.get('kind')!r}, expected {kind}")
    return obj


def _with_identity(pvc: Mapping[str, Any]) -> dict[str, Any]:
    """Hand-written claims lack a uid (and often a namespace): fill them the way the API server would."""
    claim = dict(pvc)
    metadata = claim.get("metadata")
    if not isinstance(metadata, Mapping):
        return claim
    metadata = dict(metadata)
    metadata.setdefault("namespace", "default")
    metadata.setdefault("uid", PLACEHOLDER_PVC_UID)
    claim["metadata"] = metadata
    return claim
