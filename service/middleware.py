"""The single app-level authorization hook: every request is decided by the engine."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from flask import Flask
from flask import g
from flask import request
from flask import session
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as BaseResponse

from authz import ANONYMOUS
from authz import EngineUnavailable
from authz import PolicyEngine
from authz import RequestTooLarge
from authz import UnsafePath
from authz import metrics
from authz.decision import Decision
from authz.errors import database_reason
from authz.paths import MAX_PATH
from authz.paths import MAX_SEGMENTS
from authz.paths import canonical_action
from authz.paths import canonical_object
from authz.paths import check_size
from service import forward as forward_auth
from service import responses
from service import sessions
from service import tokens
from service.decisionlog import DecisionLog
from service.events import Event
from service.events import auth_event
from service.extensions import login_manager

#: Seconds between attempts to load the policy while it is unavailable.
RETRY_LOAD_EVERY = 1.0
#: Anything that could make the policy and the router read a path differently (non-ASCII
#: bytes too: they must be valid UTF-8).
_SUSPICIOUS = re.compile(r"%|//|/\.|\\|[\x00-\x1f\x7f-\xff]")


def current_subject() -> str:
    """Return the policy subject of this request: the user's email, or ``anonymous``."""
    user = current_user._get_current_object()  # one proxy hop, not one per attribute
    if user is not None and user.is_authenticated and user.is_active:
        return str(user.subject)
    return ANONYMOUS


def _resolve_user(cache: sessions.SessionCache | None) -> sessions.SessionUser | None:
    """Resolve the session's account and hand it to Flask-Login for the views.

    This is what Flask-Login's own loader does for a session cookie, minus the steps
    this service does not use (its signal, its session fingerprint, remember-me
    cookies): it runs on every request, and those steps cost more than the decision.
    """
    # The signed cookie carries this login's session id (service.sessions); an old
    # cookie holding anything else resolves to nobody.
    token = session.get("_user_id")
    user = sessions.load(token, cache) if isinstance(token, str) and token else None
    g._login_user = user if user is not None else login_manager.anonymous_user()
    return user


def _resolve_token(secret: str, cache: tokens.TokenCache | None) -> tokens.TokenUser | None:
    """Resolve a bearer token; the request then carries no cookie session at all."""
    user, due = tokens.authenticate(secret, cache)
    # Never handed to Flask-Login as its user: views that act on "the logged-in account"
    # (by id, by email) must not mistake a token for an account. They see nobody; the
    # API's actor() and forward auth read the token from g.authz_token.
    g._login_user = login_manager.anonymous_user()
    g.authz_token = user
    if user is not None and due:
        # After the response is sent: bookkeeping never delays a decision.
        token_id = user.id
        after = g.setdefault("authz_after_response", [])
        after.append(lambda: tokens.touch(token_id))
    return user


def make_subject_of(
    cache: sessions.SessionCache | None, token_cache: tokens.TokenCache | None
) -> Callable[[dict[str, str]], str | None]:
    """Return the resolver of a request's subject, as the hook resolves it.

    A bearer token's ``token:NAME`` (None when the token is bad), else the session
    cookie's account, else ``anonymous``. Forward auth decides with it.
    """

    def subject_of(environ: dict[str, str]) -> str | None:
        secret = sessions.bearer_credentials(environ)
        if secret is not None:
            token = _resolve_token(secret, token_cache)
            if token is None:
                auth_event(Event.TOKEN_REJECTED, "-", token=secret[: tokens.HINT_LENGTH])
                return None
            return token.subject
        user = _resolve_user(cache)
        return user.subject if user is not None else ANONYMOUS

    return subject_of


def request_object(environ: dict[str, str], path: str) -> str:
    """The object to decide on; UnsafePath when the path could be read two ways."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    path_info = environ.get("PATH_INFO", "")
    if len(path) > MAX_PATH or path.count("/") > MAX_SEGMENTS:
        check_size(path)
    if _SUSPICIOUS.search(raw.split("?", 1)[0]) or _SUSPICIOUS.search(path_info):
        # Check the path as the server received it and as the router will see it.
        canonical_object(path_info, raw)
        canonical_object(path)
    return path


def _log(log: DecisionLog, engine: PolicyEngine, decision: Decision) -> None:
    """Write one of the middleware's decisions to the decision log."""
    rule = decision.rule
    log.write(
        decision_id=log.new_id(),
        subject=decision.subject,
        obj=decision.obj,
        action=decision.action,
        allowed=decision.allowed,
        rule=rule.as_list() if rule is not None else None,
        # The snapshot current now: a change swapped in since the decision is possible,
        # and rare enough not to cost the decision path a second return value.
        revision=engine.revision,
        caller="middleware",
    )


def make_authorize(app: Flask) -> Callable[[], BaseResponse | None]:
    """Return the hook for ``app``, with its engine bound (no lookups per request)."""
    engine: PolicyEngine = app.extensions["authz"]
    cache: sessions.SessionCache | None = app.extensions.get("authz.sessions")
    token_cache: tokens.TokenCache | None = app.extensions.get("authz.tokens")
    last_attempt = [0.0]
    # Counted with plain ints (authz.metrics), not a locked counter: this runs per request.
    record = metrics.MIDDLEWARE.record
    clock = time.perf_counter
    ALLOW, DENY, ERROR = metrics.ALLOW, metrics.DENY, metrics.ERROR
    # Bound once: with the middleware's decisions not logged (the default), the hot path
    # pays one test of a local bool.
    decision_log: DecisionLog | None = app.extensions.get("authz.decisions")
    log_decisions = decision_log is not None and decision_log.middleware

    def ensure_loaded() -> None:
        if engine.loaded:
            return
        now = time.monotonic()
        if now - last_attempt[0] < RETRY_LOAD_EVERY:
            raise EngineUnavailable("the policy is not loaded")
        last_attempt[0] = now
        engine.load()

    subject_of = make_subject_of(cache, token_cache)
    forward = forward_auth.make_forward(app, engine, ensure_loaded, subject_of)
    forward_path = forward_auth.PATH

    def authorize() -> BaseResponse | None:
        """Decide this request; return a response to stop it, or None to run the view."""
        started = clock()
        req = request._get_current_object()  # type: ignore[attr-defined]
        environ = req.environ
        if environ.get("PATH_INFO") == forward_path:
            # Forward auth decides another request, the one its proxy names; never
            # "may this subject GET /auth/forward" (service.forward).
            return forward(environ, environ.get("QUERY_STRING", ""))
        try:
            obj = request_object(environ, req.path)
            act = canonical_action(req.method)
        except RequestTooLarge as e:
            # Capped before any pattern runs: no request can make a decision slow.
            record(DENY, clock() - started)
            return responses.page(414, "Request too large", f"Refused request: {e}.")
        except UnsafePath as e:
            record(DENY, clock() - started)
            return responses.page(400, "Bad request", f"Refused request: {e}.")
        try:
            ensure_loaded()
            subject = subject_of(environ)
            if subject is None:  # a bearer token that is unknown, expired or revoked
                record(DENY, clock() - started)
                return responses.bad_token()
            decision = engine.decide(subject, obj, act)
            g.authz_subject = subject  # what the navigation asks the engine about
        except (EngineUnavailable, SQLAlchemyError) as e:
            # Fail closed: when the engine cannot decide, nobody gets in.
            record(ERROR, clock() - started)
            reason = database_reason(e) if isinstance(e, SQLAlchemyError) else str(e)
            return responses.unavailable(f"cannot decide: {reason}")
        if decision.allowed:
            record(ALLOW, clock() - started)
            if log_decisions:
                _log(decision_log, engine, decision)  # type: ignore[arg-type]
            return None
        record(DENY, clock() - started)
        if log_decisions:
            _log(decision_log, engine, decision)  # type: ignore[arg-type]
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
    forward_auth.register_route(app)

    @app.teardown_request
    def after_response(_error: BaseException | None) -> None:
        # Work deferred by the request (a token's last use), once it has been answered.
        for job in g.pop("authz_after_response", ()):
            job()
