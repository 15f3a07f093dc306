"""Structured JSON logs on stdout, carrying request and correlation ids from contextvars."""

from __future__ import annotations

import logging
import sys
import uuid
from typing import Any

import structlog

REQUEST_ID_HEADER = "X-Request-ID"
CORRELATION_ID_HEADER = "X-Correlation-ID"
# Ids a client sends are echoed and logged: any printable ASCII up to this length
# (docs/decisions.md, "Request ids"). A correlation id is also stored with the order
# and its audit events, in columns of 64 characters.
MAX_REQUEST_ID_LENGTH = 200
MAX_CORRELATION_ID_LENGTH = 64


def configure_logging(service: str, level: str = "INFO", *, json: bool = True) -> None:
    """Route structlog and stdlib logging to stdout as one JSON object per line."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.bind_contextvars(service=service)


def clean_id(value: str | None, max_length: int = MAX_REQUEST_ID_LENGTH) -> str:
    """A caller-supplied id (without surrounding whitespace) if it is printable ASCII
    (spaces included) of at most `max_length` characters, otherwise a fresh UUID.

    Control characters and anything outside ASCII are refused, never echoed: they could
    split a response header or forge a log line."""
    if value:
        value = value.strip(" \t")
        if value and len(value) <= max_length and value.isascii() and value.isprintable():
            return value
    return str(uuid.uuid4())


def bind_ids(request_id: str, correlation_id: str) -> None:
    """Attach ids to every log line of the current task."""
    structlog.contextvars.bind_contextvars(request_id=request_id, correlation_id=correlation_id)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
