"""Strict numbers for settings: whole numbers stay whole, floats stay finite.

Why a module of its own: ``int(2.5)`` is 2 and ``float("nan")`` compares false with everything, so a
setting read with the builtins silently becomes something the admin never wrote (``workers: 2.5`` → 2
workers; ``timeout=nan`` → a check like ``value <= 0`` passes and the wait never ends). These parsers
accept exactly what a human means by "an integer" or "a number" and raise ``ConfigError`` naming the
setting otherwise. They live in the domain so the controller's configuration and the node agent's
settings (``CINDER_ATTACH_*``) share one definition.

Accepted: for integers, a Python ``int`` (never ``bool``, never ``float``, even ``2.0``) or a string of
decimal digits with an optional sign (surrounding whitespace ignored, no ``_``, no exponent); for numbers,
an ``int`` or ``float`` or a decimal string, and in every case finite (no NaN, no infinity).
"""

from __future__ import annotations

import math
import re
from typing import Final

from provisioner.domain.errors import ConfigError

_INT_TEXT: Final = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT_TEXT: Final = re.compile(
    r"[+-]?(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18})(?:[eE][+-]?[0-9]{1,3})?"
)


def strict_int(raw: object, field: str, *, lo: int, hi: int) -> int:
    """``raw`` as an int in ``[lo, hi]``; floats, bools and non-decimal text → ``ConfigError(field)``."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ConfigError(field, f"must be a whole number, not {_kind(raw)}")
    if isinstance(raw, str):
        text = raw.strip()
        if not _INT_TEXT.fullmatch(text):
            raise ConfigError(field, f"must be a whole number, not {_shown(raw)}")
        value = int(text)
    else:
        value = raw
    if not lo <= value <= hi:
        raise ConfigError(field, f"must be between {lo} and {hi}, not {value}")
    return value


def finite_float(raw: object, field: str, *, lo: float, hi: float = 1e12) -> float:
    """``raw`` as a finite float in ``[lo, hi]``; NaN, infinity, bools and other text → ``ConfigError``."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ConfigError(field, f"must be a number, not {_kind(raw)}")
    if isinstance(raw, str):
        text = raw.strip()
        if not _FLOAT_TEXT.fullmatch(text):
            raise ConfigError(field, f"must be a number, not {_shown(raw)}")
        value = float(text)
    else:
        value = float(raw)
    if not math.isfinite(value):
        raise ConfigError(field, "must be a finite number (not NaN or infinity)")
    if not lo <= value <= hi:
        raise ConfigError(field, f"must be between {lo:g} and {hi:g}, not {value:g}")
    return value


def _kind(raw: object) -> str:
    if isinstance(raw, float):
        return f"the fraction {raw!r}" if math.isfinite(raw) else f"{raw!r}"
    return "a " + type(raw).__name__.replace("NoneType", "null").replace("str", "string")


def _shown(raw: str) -> str:
    """A short, printable rendering of a bad value (settings that hold secrets never come here)."""
    text = raw if len(raw) <= 40 else raw[:37] + "..."
    return ascii(text)
