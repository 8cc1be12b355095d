"""Logging: human-readable by default, one JSON object per line with TWIN_LOG_JSON=1."""

import json
import logging
import sys
import time

from twin.auth import KeyRedaction
from twin.settings import Settings

REDACTION = KeyRedaction()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_json
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # alembic names each of its plugins at INFO on every migration check: a screen of noise at every start
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # uvicorn's loggers have their own handlers: no API key may pass those either
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for each in logging.getLogger(name).handlers:
            each.addFilter(REDACTION)
