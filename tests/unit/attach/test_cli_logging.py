"""The node agent's log stream: every line JSON, other libraries' stdlib records included and masked."""

from __future__ import annotations

import io
import json
import logging

import structlog

from attach.cli import configure_logging


def test_stdlib_records_are_json_lines_with_secret_fields_masked() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    try:
        logging.getLogger("grpc._server").warning("Exception calling application: %s", "boom")
        logging.getLogger("urllib3").info("not below the level")
        logging.getLogger("grpc._server").debug("below the level")
        configure_logging("info", stream=out)  # again: replaces our handler
        structlog.get_logger("attach").info("staged", volume_id="v-1", secret="s3cr3t-value")
    finally:
        ours = [h for h in logging.getLogger().handlers if getattr(h, "_cinder_attach_handler", False)]
        for h in ours:
            logging.getLogger().removeHandler(h)
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d.get("logger"), d["level"], d["event"]) for d in lines] == [
        ("grpc._server", "warning", "Exception calling application: boom"),
        ("urllib3", "info", "not below the level"),
        (None, "info", "staged"),
    ]
    assert "s3cr3t-value" not in out.getvalue()
    assert len(ours) == 1
