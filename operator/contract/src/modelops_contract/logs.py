"""The one structured log format: one JSON object per line.

Fields: ``ts`` (RFC 3339 UTC, milliseconds), ``level`` (lower case), ``logger``, ``msg``, every
``extra=`` field, and ``exc`` with the traceback. The operator, the model server and the load
generator all log through :class:`JsonFormatter`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

# Attributes every LogRecord has; anything else came from `extra=` and is logged as a field.
# kopf attaches its whole settings object to some records and uvicorn a coloured copy of the
# message: both are left out to keep lines short.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
    "settings",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
