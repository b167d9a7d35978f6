"""The decision log: one JSON line per decision made for another service.

Decisions of the check API and of forward auth (and of the middleware, when
``AUTHZ_DECISION_LOG_MIDDLEWARE`` is on) can be written as JSON lines::

    {"decision_id": "5f0c9e1a2b3c4d5e-1f", "time": "2026-11-29T12:00:00.123Z",
     "subject": "token:ci", "object": "/reports", "action": "GET", "allowed": true,
     "rule": ["p", "reader", "/reports", "GET", "allow"], "revision": 42, "caller": "..."}

``AUTHZ_DECISION_LOG`` is ``off`` (the default), ``sample`` (a fraction of decisions,
``AUTHZ_DECISION_LOG_SAMPLE``) or ``full``. Off costs one attribute test per decision:
callers check :attr:`DecisionLog.enabled` before building anything.

Every decision still gets an id (the check API returns it), made from a random
per-process prefix and a counter: unique across workers and instances, and cheap.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import random
import secrets
import sys
from collections.abc import Sequence
from typing import Any

from flask import Flask
from flask import current_app

#: The logger decision lines go to (its own handler: only the JSON line, no prefix).
LOGGER = "authz.decisions"


class DecisionLog:
    """Writes decisions as JSON lines, all of them, a sample, or none."""

    def __init__(
        self, mode: str = "off", sample: float = 1.0, middleware: bool = False, path: str = ""
    ) -> None:
        self.mode = mode
        #: Whether any decision is written: test this before building a line.
        self.enabled = mode != "off" and (mode == "full" or sample > 0)
        #: Whether the middleware's own decisions are written too.
        self.middleware = self.enabled and middleware
        self.sample = 1.0 if mode == "full" else sample
        self._prefix = secrets.token_hex(8) + "-"
        self._counter = itertools.count(1)
        self._random = random.Random()  # noqa: S311 - sampling, not a secret
        self._logger = logging.getLogger(LOGGER)
        self._handler: logging.Handler | None = None
        if self.enabled:
            self._handler = (
                logging.FileHandler(path, encoding="utf-8")
                if path
                else logging.StreamHandler(sys.stderr)
            )
            self._handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(self._handler)
            self._logger.setLevel(logging.INFO)
            self._logger.propagate = False  # one line per decision, not two

    def after_fork(self) -> None:
        """A forked worker's own id prefix and sampling (gunicorn ``preload_app``)."""
        self._prefix = secrets.token_hex(8) + "-"
        self._counter = itertools.count(1)
        self._random = random.Random()  # noqa: S311 - sampling, not a secret

    def new_id(self) -> str:
        """A fresh decision id: this process's random prefix and a counter."""
        return f"{self._prefix}{next(self._counter):x}"

    def write(self, **fields: Any) -> None:
        """Write one decision (when enabled, and when sampled in).

        ``fields`` are :meth:`line`'s, except ``time``, which is now.
        """
        if not self.enabled:
            return
        line = self.line(**fields, time=_now())
        if line is not None:
            self._logger.info(line)

    def line(
        self,
        *,
        decision_id: str,
        subject: str,
        obj: str,
        action: str,
        allowed: bool,
        rule: Sequence[str] | None,
        revision: int,
        caller: str,
        time: str,
    ) -> str | None:
        """One decision's JSON line, or None when sampling leaves it out."""
        if self.sample < 1.0 and self._random.random() >= self.sample:
            return None
        line = {
            "decision_id": decision_id,
            "time": time,
            "subject": subject,
            "object": obj,
            "action": action,
            "allowed": allowed,
            "rule": list(rule) if rule is not None else None,
            "revision": revision,
            "caller": caller,
        }
        # ASCII only: a U+2028, U+2029 or U+0085 in a path would split the line for
        # readers that break lines on them (str.splitlines, some log shippers).
        return json.dumps(line, separators=(",", ":"))

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write lines made by :meth:`line` (a batch's) as one log record: one write."""
        if self.enabled and lines:
            self._logger.info("\n".join(lines))

    @staticmethod
    def now() -> str:
        """The time of a decision as lines carry it (UTC, milliseconds)."""
        return _now()

    def close(self) -> None:
        """Detach and close this log's handler (an app being disposed)."""
        if self._handler is not None:
            self._logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None


def _now() -> str:
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def init_app(app: Flask, mode: str, sample: float, middleware: bool, path: str) -> DecisionLog:
    """Install the app's decision log as ``app.extensions["authz.decisions"]``."""
    log = DecisionLog(mode, sample, middleware, path)
    app.extensions["authz.decisions"] = log
    return log


def current() -> DecisionLog:
    """The current app's decision log."""
    return current_app.extensions["authz.decisions"]  # type: ignore[no-any-return]
