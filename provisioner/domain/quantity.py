"""Kubernetes resource quantities → whole GiB, as Cinder sizes volumes.

A claim asks for ``storage: 1500M`` or ``2.5Gi``; Cinder only creates whole GiB. We round **up** (a claim
must never get less than it asked for) with exact rational arithmetic, because float rounding would turn
``1Gi`` into 2 GiB or ``1073741825`` bytes into 1 GiB. The grammar is Kubernetes' own
(``k8s.io/apimachinery/pkg/api/resource``): signed decimal number, then a binary-SI suffix (Ki…Ei), a
decimal-SI suffix (n, u, m, k, M, G, T, P, E) or a decimal exponent (``e3``, ``E-2``). A storage request
must be greater than zero, as the API server requires of a claim: ``storage: "0"`` is refused, never
rounded up to 1 GiB.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, Final

from provisioner.domain.errors import InvalidInput

STORAGE_FIELD: Final = "spec.resources.requests.storage"
GIB: Final = 1 << 30

_BINARY: Final = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL: Final = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_QUANTITY: Final = re.compile(
    r"(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|[eE](?P<exp>[+-]?[0-9]+)|(?P<decimal>[numkMGTPE]?))"
)
#: Exponents beyond this are refused instead of computing 10**huge (Kubernetes caps quantities too).
_MAX_EXPONENT: Final = 64
_MAX_DIGITS: Final = 64
#: Sizes beyond this many GiB (1 EiB) are refused: no Cinder backend is that large, and it bounds the maths.
MAX_GIB: Final = 1 << 30


def parse_quantity(text: str, *, field: str = STORAGE_FIELD) -> Fraction:
    """The exact value of a quantity string (bytes for storage); ``InvalidInput`` naming ``field``."""
    match = _QUANTITY.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        shown = (
            ascii(text if len(text) <= 40 else text[:37] + "...") if isinstance(text, str) else "a non-string"
        )
        raise InvalidInput(field, f"{shown} is not a Kubernetes quantity (e.g. 10Gi, 1500M, 1e9)")
    if len(match["number"]) > _MAX_DIGITS:
        raise InvalidInput(field, "has too many digits")
    value = Fraction(match["number"])
    if match["binary"]:
        value *= _BINARY[match["binary"]]
    elif match["exp"] is not None:
        exponent = int(match["exp"])
        if abs(exponent) > _MAX_EXPONENT:
            raise InvalidInput(field, f"exponent {exponent} is out of range")
        value *= Fraction(10) ** exponent
    else:
        value *= _DECIMAL[match["decimal"] or ""]
    return -value if match["sign"] == "-" else value


def quantity_to_gib(text: str, *, field: str = STORAGE_FIELD) -> int:
    """Bytes in ``text`` rounded up to whole GiB; zero, negative or absurd sizes are refused."""
    value = parse_quantity(text, field=field)
    if value < 0:
        raise InvalidInput(field, "must not be negative")
    if value == 0:
        raise InvalidInput(field, "must be greater than zero")
    gib = math.ceil(value / GIB)
    if gib > MAX_GIB:
        raise InvalidInput(field, "is larger than 1 EiB")
    return gib


def gib_quantity(size_gib: int) -> str:
    """The canonical quantity string for a whole number of GiB (PV ``capacity``)."""
    return f"{size_gib}Gi"


def requested_size_gib(pvc: Mapping[str, Any]) -> int:
    """The claim's ``spec.resources.requests.storage`` in whole GiB (rounded up; zero is refused)."""
    spec = pvc.get("spec") if isinstance(pvc, Mapping) else None
    resources = spec.get("resources") if isinstance(spec, Mapping) else None
    requests = resources.get("requests") if isinstance(resources, Mapping) else None
    raw = requests.get("storage") if isinstance(requests, Mapping) else None
    if raw is None:
        raise InvalidInput(STORAGE_FIELD, "missing: the claim must request storage")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise InvalidInput(STORAGE_FIELD, "must be a quantity string such as 10Gi")
    return quantity_to_gib(str(raw))
