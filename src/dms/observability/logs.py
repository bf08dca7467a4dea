"""Log set-up for the server: plain or JSON lines, a level per logger, the access log on or off."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import orjson

LogFormat = Literal["plain", "json"]
_EXTRA_FIELDS = ("request_id", "transport", "model", "model_version", "status", "latency_ms", "batch_size")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the request fields when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _EXTRA_FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, log_format: LogFormat, logger_levels: dict[str, str], access_log: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":
        # uvicorn announces each of the three ports at INFO; DMS prints its own ready line.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("dms.access").disabled = not access_log
    for name, name_level in logger_levels.items():
        logging.getLogger(name).setLevel(name_level.upper())
