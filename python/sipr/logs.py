"""Log setup for `sipr run`: text or JSON lines, the Call-ID on every line
about a message.

The server puts the request a handler task serves in `current_request` (a
context variable, so each task has its own); a filter copies its Call-ID
into every record logged from that task, the app's own `logging` calls
included. A record may also carry `call_id` itself (`extra=`)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from sipr._core import Request

#: The request the running handler task serves (None outside handlers).
current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "sipr_current_request", default=None
)

FORMATS = ("text", "json")

#: `--log-format json`: the startup lines (`announce`) are JSON too.
json_banner = False


def announce(text: str) -> None:
    """A startup line on stderr (what tests and operators wait for)."""
    if json_banner:
        record = logging.LogRecord("sipr", logging.INFO, __file__, 0, text, None, None)
        text = JsonFormatter().format(record)
    print(text, file=sys.stderr, flush=True)


class CallIdFilter(logging.Filter):
    """Sets `record.call_id` from the current handler's request (or None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_id", None) is None:
            req = current_request.get()
            record.call_id = getattr(req, "call_id", None) if req is not None else None
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        call_id = getattr(record, "call_id", None)
        if call_id is None or f"Call-ID {call_id}" in line:
            return line
        head, sep, rest = line.partition("\n")
        return f"{head} [Call-ID {call_id}]{sep}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg,
    call_id when the line is about a message, exc for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id is not None:
            out["call_id"] = call_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def setup(level: str = "info", fmt: str = "text") -> None:
    """One stderr handler on the root logger in format `fmt`. If the app
    configured logging itself (root handlers exist), its handlers stay and
    only get the Call-ID filter (`%(call_id)s` in their format)."""
    global json_banner
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    json_banner = fmt == "json"
    root = logging.getLogger()
    root.setLevel(level.upper())
    if root.handlers:
        for existing in root.handlers:
            existing.addFilter(CallIdFilter())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
