"""Redaction: secrets never reach a log line, whatever key or nesting they arrive under."""

from __future__ import annotations

import io
import json

import structlog

from provisioner.telemetry import logs

SECRETS = ["chap-s3cret-pw", "AQBvaW5rZXlrZXlrZXlrZXlrZXk9PQ==", "os-passw0rd", "gAAAAtoken123"]


def test_redaction_processor_scrubs_nested_and_text_secrets() -> None:
    """Sensitive keys at any depth and secret-looking text are replaced by ***."""
    out = io.StringIO()
    logs.configure("debug", stream=out)
    log = structlog.get_logger("t")
    log.info(
        "attach",
        connection_info={"data": {"auth_password": SECRETS[0]}},
        data={"node.session.auth.password": SECRETS[0], "keyring": f"[client.admin]\n\tkey = {SECRETS[1]}\n"},
        auth={"password": SECRETS[2]},
        message=f"token={SECRETS[3]} key = {SECRETS[1]}",
        volume_id="v-1",
    )
    line = out.getvalue()
    for secret in SECRETS:
        assert secret not in line
    assert "v-1" == json.loads(line.strip().splitlines()[-1])["volume_id"]
    structlog.reset_defaults()


def test_other_libraries_lines_are_json_and_redacted() -> None:
    """A stdlib log record (urllib3, keystoneauth1, the kubernetes client) is one JSON line with level,
    time and logger name, and passes the same redaction: it used to be bare, unredacted text."""
    import logging

    out = io.StringIO()
    logs.configure("info", stream=out)
    try:
        logging.getLogger("urllib3.connectionpool").warning(
            "Connection pool is full, discarding connection: %s. password=%s", "127.0.0.1", SECRETS[2]
        )
        logging.getLogger("keystoneauth1.session").debug("below the level: %s", SECRETS[3])
        logs.configure("info", stream=out)  # configuring again replaces our handler, does not add one
        logging.getLogger("kubernetes.client.rest").error("token=%s", SECRETS[3])
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["logger"], d["level"]) for d in lines] == [
        ("urllib3.connectionpool", "warning"),
        ("kubernetes.client.rest", "error"),
    ]
    assert lines[0]["event"].startswith("Connection pool is full, discarding connection: 127.0.0.1.")
    assert all("timestamp" in d for d in lines)
    for secret in SECRETS:
        assert secret not in out.getvalue()
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_cinder_provisioner_handler", False)]
    assert len(ours) == 1
    logging.getLogger().removeHandler(ours[0])
