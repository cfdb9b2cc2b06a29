"""Structured logs: JSON lines with the request/correlation id bound in, personal data masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from allot.kernel import context, pii

# Keys whose values are machine data, never personal: masking them would only garble them.
_UNMASKED_KEYS = frozenset(
    {"timestamp", "level", "logger", "request_id", "correlation_id", "event_id", "duration_ms",
     "status", "method", "route", "consumer", "event_type"}
)  # fmt: skip


def _bind_context(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    request_id = context.current_request_id()
    if request_id and "request_id" not in event_dict:
        event_dict["request_id"] = request_id
    correlation_id = context.correlation_id_var.get()
    if correlation_id and "correlation_id" not in event_dict:
        event_dict["correlation_id"] = correlation_id
    return event_dict


def mask_personal_data(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no phone, email or name leaves the process in a log line."""
    safe = {k: v for k, v in event_dict.items() if k in _UNMASKED_KEYS}
    rest = {k: v for k, v in event_dict.items() if k not in _UNMASKED_KEYS}
    masked = pii.mask_mapping(rest)
    event_dict.clear()
    event_dict.update(safe)
    event_dict.update(masked)
    return event_dict


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _bind_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_personal_data,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Route stdlib logging (uvicorn, sqlalchemy, alembic) through the same masking pipeline.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
