"""Content negotiation: which request bodies the simulator can decode and which answers it can produce.

The simulator speaks JSON only. A client that sends protobuf (Go clients configured with
``application/vnd.kubernetes.protobuf``, as kube components are) must get what the real server sends for a
type it cannot decode — ``415 UnsupportedMediaType`` — instead of a misleading ``400 invalid JSON``; and a
client that accepts nothing but protobuf gets ``406 NotAcceptable`` instead of JSON it cannot parse. The
messages follow apimachinery's negotiation errors, listing what the simulator accepts.
"""

from __future__ import annotations

from provisioner.testworld.kube_sim.patch import patch_types
from provisioner.testworld.kube_sim.status import not_acceptable, unsupported_media_type

JSON = "application/json"
#: Media types the simulator decodes from and encodes to (the real server adds yaml, protobuf, cbor).
SUPPORTED = (JSON,)


def media_type(header: str | None) -> str:
    """The bare, lower-cased media type of a Content-Type header ("" when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def check_body_type(content_type: str | None) -> None:
    """POST/PUT (and DELETE with DeleteOptions): JSON, or no Content-Type (the server defaults to JSON)."""
    mtype = media_type(content_type)
    if mtype and mtype not in SUPPORTED:
        raise unsupported_media_type(SUPPORTED)


def check_patch_type(content_type: str | None, *, builtin: bool) -> str:
    """The PATCH's type, or 415 before anything is read (strategic merge only for built-in kinds)."""
    mtype = media_type(content_type)
    accepted = patch_types(builtin)
    if mtype not in accepted:
        raise unsupported_media_type(accepted)
    return mtype


def check_accept(accept: str | None) -> None:
    """406 unless the Accept header admits JSON (``application/json``, ``application/*``, ``*/*``).

    Media type parameters (``as=Table``, ``stream=watch``…) are ignored — Table output is not implemented,
    plain JSON is served — except ``q=0``, which excludes a range.
    """
    if not accept or not accept.strip():
        return
    for clause in accept.split(","):
        mtype, *params = (p.strip() for p in clause.split(";"))
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        if mtype.lower() in (JSON, "application/*", "*/*"):
            return
    raise not_acceptable(SUPPORTED)
