"""Logs as one JSON object a line: stdlib logging and a small formatter, nothing else.

Every line has `time`, `level`, `logger` and `message`; a line written while a request is being
served also has its `request_id`. Whatever a caller passes in `extra={...}` becomes fields of the
line, so `log.info("...", extra={"product": 7})` writes `"product": 7`.

LOG_LEVEL (default INFO; WARNING in `flask ...` commands) sets the level; LOG_FORMAT=text writes the same fields as one readable
line for a terminal instead of JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

# The attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_FIRST = ("time", "level", "logger", "message")


def _request_id() -> str | None:
    try:
        from flask import g, has_request_context
    except ImportError:  # pragma: no cover - flask is always there in the app
        return None
    if not has_request_context():
        return None
    return g.get("request_id")


def record_fields(record: logging.LogRecord) -> dict:
    """The fields of one log line, in a stable order: the four fixed ones first."""
    out = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6]
        + "Z",
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    request_id = _request_id()
    if request_id is not None:
        out["request_id"] = request_id
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_") and key not in _FIRST:
            out[key] = value
    return out


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out = record_fields(record)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The same fields for a terminal: `time LEVEL logger: message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        out = record_fields(record)
        head = f"{out.pop('time')} {out.pop('level')} {out.pop('logger')}: {out.pop('message')}"
        tail = " ".join(f"{k}={v}" for k, v in out.items() if v is not None)
        line = f"{head} {tail}" if tail else head
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _in_cli_command() -> bool:
    import click

    return click.get_current_context(silent=True) is not None


def configure_logging(app) -> None:
    """Send every logger's records to stderr through one formatter (JSON unless LOG_FORMAT=text).

    Tests (app.testing) keep pytest's own capture; calling this again replaces our handler
    rather than adding a second one.
    """
    if app.testing:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_trackopz", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._trackopz = True
    text = (os.environ.get("LOG_FORMAT") or "json").strip().lower() == "text"
    handler.setFormatter(TextFormatter() if text else JSONFormatter())
    root.addHandler(handler)
    # A `flask ...` command says what it did itself: its INFO lines (say, the 300 transitions
    # of `flask seed-demo`) would bury that, so there the default is WARNING.
    default = "WARNING" if _in_cli_command() else "INFO"
    level = (os.environ.get("LOG_LEVEL") or default).strip().upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else default)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
