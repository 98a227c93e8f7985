"""structlog configuration: JSON lines with bound context, and a redaction processor that is tested.

Secrets must never reach a log line: CHAP passwords, cephx keys and keyrings, OpenStack passwords and
tokens, and whole connection-info blobs are replaced by ``***`` whatever key or nesting they arrive under.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "***"
_SENSITIVE_KEY = re.compile(
    r"(pass(word)?|secret|token|keyring|credential|auth_key|^key$|cephx|connection_info|\.password$)", re.I
)
_SENSITIVE_TEXT = [
    (re.compile(r"(?i)(\bkey\s*=\s*)[A-Za-z0-9+/=]{16,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)((?:password|secret|token)['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(X-Auth-Token:\s*)\S+"), r"\1" + REDACTED),
]


def redact_value(value: Any, depth: int = 0) -> Any:
    """Recursively redact sensitive keys in mappings and secret-looking text in strings."""
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SENSITIVE_KEY.search(k) else redact_value(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, depth + 1) for v in value)
    if isinstance(value, str):
        for pattern, repl in _SENSITIVE_TEXT:
            value = pattern.sub(repl, value)
        return value
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact every field of the event."""
    for k in list(event_dict):
        if _SENSITIVE_KEY.search(k):
            event_dict[k] = REDACTED
        else:
            event_dict[k] = redact_value(event_dict[k])
    return event_dict


#: Marks the root handler ``configure`` installed, so a second call replaces it instead of adding one.
_HANDLER_MARK = "_cinder_provisioner_handler"


def configure(level: str = "info", *, json_output: bool = True, stream: Any = None) -> None:
    """Configure structlog (and stdlib logging underneath) once, at process start.

    Our own lines are rendered by structlog directly. Lines of other libraries (urllib3, keystoneauth1,
    the kubernetes client log through stdlib ``logging``) go through the same redaction and renderer, so
    every line of the stream is one JSON object with a level, a time and the logger's name — not bare
    text in the middle of a JSON stream, and never past ``redact``.
    """
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    out = stream or sys.stderr
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    foreign = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
            structlog.processors.format_exc_info,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(foreign)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
