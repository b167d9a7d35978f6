"""The single app-level authorization hook: every request is decided by the engine."""

from __future__ import annotations

import time

from flask import Flask
from flask import Response
from flask import current_app
from flask import g
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


def current_subject() -> str:
    """Return the policy subject of this request: the user's email, or ``anonymous``."""
    user = current_user
    if user and user.is_authenticated and user.is_active:
        return str(user.subject)
    return ANONYMOUS


def authorize() -> Response | None:
    """Decide this request; return a response to stop it, or None to let the view run."""
    engine: PolicyEngine = current_app.extensions["authz"]
    environ = request.environ
    try:
        # Check the path as the server received it and as the router will see it.
        canonical_object(
            environ.get("PATH_INFO", ""), environ.get("RAW_URI") or environ.get("REQUEST_URI")
        )
        obj = canonical_object(request.path)
    except UnsafePath as e:
        return responses.page(400, "Bad request", f"Refused path: {e}.")
    act = canonical_action(request.method)
    try:
        _ensure_loaded(engine)
        subject = current_subject()
        decision = engine.decide(subject, obj, act)
    except (EngineUnavailable, SQLAlchemyError) as e:
        # Fail closed: when the engine cannot decide, nobody gets in.
        current_app.logger.error("cannot decide %s %s: %s", act, obj, e)
        return responses.unavailable(str(e))
    g.decision = decision
    if decision.allowed:
        return None
    if subject == ANONYMOUS:
        return responses.login_required()
    return responses.forbidden(subject)


def _ensure_loaded(engine: PolicyEngine) -> None:
    if engine.loaded:
        return
    state = current_app.extensions["authz.state"]
    now = time.monotonic()
    if now - state.get("last_load_attempt", 0.0) < RETRY_LOAD_EVERY:
        raise EngineUnavailable("the policy is not loaded")
    state["last_load_attempt"] = now
    engine.load()


def init_app(app: Flask) -> None:
    """Install the hook on the app itself, so it runs for every route and blueprint."""
    app.extensions.setdefault("authz.state", {})
    # Registered first, before any blueprint hook, and on the app, not a blueprint:
    # static files and unknown paths are decided too.
    app.before_request_funcs.setdefault(None, []).insert(0, authorize)
