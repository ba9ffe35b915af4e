"""Structured logs: one JSON object per line on stderr (stdout carries the summary)."""

from __future__ import annotations

import logging
import sys

from modelops_contract.logs import JsonFormatter


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("modelops_loadgen")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
