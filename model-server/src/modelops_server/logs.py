"""Structured logs: one JSON object per line on stderr, uvicorn's own records included."""

from __future__ import annotations

from typing import Any

from modelops_contract.logs import JsonFormatter


def log_config(level: str) -> dict[str, Any]:
    """A logging.dictConfig for our loggers and uvicorn's (passed to uvicorn.run)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "loggers": {
            "modelops_server": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": ["stderr"], "level": upper, "propagate": False},
        },
    }
