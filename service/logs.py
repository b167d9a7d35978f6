"""Log lines: one per event, with time, level, process id and request id; text or JSON.

The ``authz`` and ``service`` loggers get one handler, installed once per process, on
standard error. Records still propagate to the root logger, so whatever an operator (or
pytest's ``caplog``) attaches there sees them too.

Every request gets an id: the ``X-Request-ID`` a trusted proxy sent (so a line here
matches the proxy's), or a new random one; it is echoed in the response's header.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import re
import secrets
import sys
from typing import Any

import click
from flask import Flask
from flask import has_request_context
from flask import request
from flask.logging import default_handler

from service.config import Settings
from service.proxies import PEER_KEY
from service.proxies import WSGIApp

#: The loggers of this service: the engine's and the web application's.
LOGGERS = ("authz", "service")
#: Where the request id is kept in the WSGI environ.
REQUEST_ID_KEY = "authz.request_id"
#: An incoming request id is taken only when it looks like one (and from trusted proxies).
_VALID_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def _new_prefix() -> None:
    # Ids are unique, not secret: a random prefix per process and a counter (no system
    # call per request). A forked worker takes a new prefix.
    global _prefix, _counter
    _prefix, _counter = secrets.token_hex(4), itertools.count()


_prefix, _counter = "", itertools.count()
_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


class RequestIds:
    """WSGI middleware: give every request an id and echo it as ``X-Request-ID``."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        # Only a trusted proxy may name the id: anyone else could forge log correlation
        # or inject text into every line logged for the request.
        incoming = environ.get("HTTP_X_REQUEST_ID") if PEER_KEY in environ else None
        if incoming and _VALID_ID.fullmatch(incoming):
            rid = incoming
        else:
            rid = f"{_prefix}{next(_counter):08x}"
        environ[REQUEST_ID_KEY] = rid

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(("X-Request-ID", rid))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def request_id() -> str:
    """The id of the request being served, or ``-`` outside a request."""
    if has_request_context():
        return str(request.environ.get(REQUEST_ID_KEY, "-"))
    return "-"


def _client() -> str:
    # Behind trusted proxies REMOTE_ADDR is already the real client (service.proxies).
    return (request.remote_addr or "-") if has_request_context() else "-"


class _RequestContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if click.get_current_context(silent=True) is not None:
            # A CLI command prints its own one-line result: the lines logged on its
            # thread are not repeated (requests served by `authz serve` run on others).
            return False
        record.request_id = request_id()
        record.client = _client()
        return True


def _time(record: logging.LogRecord) -> str:
    stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: Characters that end a line for some reader: CR, LF, VT, FF, the file/group/record
#: separators, C1 NEL and the Unicode line and paragraph separators (str.splitlines breaks
#: on all of them, and so do some log shippers).
_LINE_BREAKS = {c: f"\\u{c:04x}" for c in (0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}
_LINE_BREAKS.update({0x0D: "\\r", 0x0A: "\\n"})


def _one_line(message: str) -> str:
    """The message with every line-ending character escaped, so it stays one line."""
    return message.translate(_LINE_BREAKS)


class TextFormatter(logging.Formatter):
    """``TIME LEVEL pid=PID req=ID client=ADDR LOGGER: message``, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = _one_line(record.getMessage())
        line = (
            f"{_time(record)} {record.levelname} pid={record.process} "
            f"req={getattr(record, 'request_id', '-')} client={getattr(record, 'client', '-')} "
            f"{record.name}: {message}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, pid, request_id, client, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": _time(record),
            "level": record.levelname,
            "pid": record.process,
            "request_id": getattr(record, "request_id", "-"),
            "client": getattr(record, "client", "-"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)  # ASCII: no character of a value can end the line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners replace it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


_handler = _StderrHandler()
_handler.addFilter(_RequestContext())
#: The level each logger was given here, so a level set by someone else is left alone.
_applied: dict[str, int] = {}


def init_app(app: Flask, settings: Settings) -> None:
    """Send the service's log lines to standard error, formatted as configured."""
    _handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    level = logging.getLevelName(settings.log_level)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _handler not in logger.handlers:
            logger.addHandler(_handler)
        if logger.level in (logging.NOTSET, _applied.get(name)):
            logger.setLevel(level)
            _applied[name] = level
    # Flask's own handler would print every app.logger line a second time.
    app.logger.removeHandler(default_handler)


def init_request_ids(app: Flask) -> None:
    """Give every request an id (logged with each line, echoed as X-Request-ID)."""
    app.wsgi_app = RequestIds(app.wsgi_app)  # type: ignore[method-assign]
