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
