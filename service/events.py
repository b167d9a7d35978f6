"""Authentication events: one log line each, with the client address, and a counter.

Every part of the account layer reports through :func:`auth_event`: the login view
(success, failure, throttled), the throttle commands, password change and reset, ended
sessions. A line reads ``auth event login_failure email=a@example.com
address=203.0.113.9 ...`` (in the JSON log format the same as fields of the message), and
``authz.metrics`` counts ``auth_event.<kind>`` (``metrics.snapshot()``); login outcomes
are also exported to Prometheus as ``authz_logins_total`` by the login view.
"""

from __future__ import annotations

import enum
import logging
import re
from typing import Any

from flask import has_request_context

from authz import metrics
from service import proxies

log = logging.getLogger(__name__)

#: An event kind is a short lower-case word: it names a counter and is grepped for.
_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}\Z")
#: Control characters and spaces in a logged value would forge or split a log line.
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


class Event(enum.StrEnum):
    """The kinds this service reports (others may be added; keep them short words)."""

    LOGIN_SUCCESS = "login_success"
    LOGIN_FAILURE = "login_failure"
    #: An attempt refused by the throttle before its password was checked.
    LOGIN_THROTTLED = "login_throttled"
    #: An attempt that started an account's (or address's) delay.
    LOCKOUT = "lockout"
    UNTHROTTLE = "unthrottle"
    PASSWORD_CHANGE = "password_change"  # noqa: S105 - an event name, not a password
    PASSWORD_RESET = "password_reset"  # noqa: S105 - an event name, not a password
    SESSION_END = "session_end"
    #: A bearer token that is unknown, revoked or expired (logged with its first
    #: characters only, which name the token without revealing it).
    TOKEN_REJECTED = "token_rejected"  # noqa: S105 - an event name, not a token


def _clean(value: object) -> str:
    return _UNSAFE.sub("_", str(value))[:255] or "-"


def auth_event(kind: str, email: str, **fields: Any) -> None:
    """Log one INFO line for an authentication event and count it.

    :param kind: an :class:`Event` value, or another short lower-case word.
    :param email: the account as typed or stored (unknown accounts too).
    :param fields: more ``name=value`` pairs for the line (no secrets: never passwords).
    """
    if not _KIND.match(kind):
        raise ValueError(f"bad event kind {kind!r}")  # a bug in the caller, not input
    address = proxies.client_address() if has_request_context() else "-"
    extra = "".join(f" {_clean(k)}={_clean(v)}" for k, v in sorted(fields.items()))
    log.info("auth event %s email=%s address=%s%s", kind, _clean(email), address, extra)
    metrics.count(f"auth_event.{kind}")
