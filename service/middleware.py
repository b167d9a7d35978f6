"""The single app-level authorization hook: every request is decided by the engine."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from flask import Flask
from flask import Response
from flask import request
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

from authz import ANONYMOUS
from authz import EngineUnavailable
from authz import PolicyEngine
from authz import UnsafePath
from authz.paths import canonical_action
from authz.paths import canonical_object
from service import responses

#: Seconds between attempts to load the policy while it is unavailable.
RETRY_LOAD_EVERY = 1.0
#: Anything that could make the policy and the router read a path differently.
_SUSPICIOUS = re.compile(r"%|//|/\.|\\|[\x00-\x1f\x7f]")


def current_subject() -> str:
    """Return the policy subject of this request: the user's email, or ``anonymous``."""
    user = current_user
    if user and user.is_authenticated and user.is_active:
        return str(user.subject)
    return ANONYMOUS


def request_object(environ: dict[str, str], path: str) -> str:
    """The object to decide on; UnsafePath when the path could be read two ways."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    path_info = environ.get("PATH_INFO", "")
    if _SUSPICIOUS.search(raw.split("?", 1)[0]) or _SUSPICIOUS.search(path_info):
        # Check the path as the server received it and as the router will see it.
        canonical_object(path_info, raw)
        canonical_object(path)
    return path


def make_authorize(app: Flask) -> Callable[[], Response | None]:
    """Return the hook for ``app``, with its engine bound (no lookups per request)."""
    engine: PolicyEngine = app.extensions["authz"]
    last_attempt = [0.0]

    def ensure_loaded() -> None:
        if engine.loaded:
            return
        now = time.monotonic()
        if now - last_attempt[0] < RETRY_LOAD_EVERY:
            raise EngineUnavailable("the policy is not loaded")
        last_attempt[0] = now
        engine.load()

    def authorize() -> Response | None:
        """Decide this request; return a response to stop it, or None to run the view."""
        try:
            obj = request_object(request.environ, request.path)
        except UnsafePath as e:
            return responses.page(400, "Bad request", f"Refused path: {e}.")
        act = canonical_action(request.method)
        try:
            ensure_loaded()
            subject = current_subject()
            decision = engine.decide(subject, obj, act)
        except (EngineUnavailable, SQLAlchemyError) as e:
            # Fail closed: when the engine cannot decide, nobody gets in.
            app.logger.error("cannot decide %s %s: %s", act, obj, e)
            return responses.unavailable(str(e))
        if decision.allowed:
            return None
        if subject == ANONYMOUS:
            return responses.login_required()
        return responses.forbidden(subject)

    return authorize


def init_app(app: Flask) -> None:
    """Install the hook on the app itself, so it runs for every route and blueprint."""
    authorize = make_authorize(app)
    app.extensions["authz.middleware"] = authorize
    # Registered first, before any blueprint hook, and on the app, not a blueprint:
    # static files and unknown paths are decided too.
    app.before_request_funcs.setdefault(None, []).insert(0, authorize)
