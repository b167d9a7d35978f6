"""HTTP translation of outcomes: JSON or HTML, problem documents, safe redirects."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import jsonify
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import AnonymousUserMixin
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from authz import EngineUnavailable
from authz.errors import database_reason

API_PREFIX = "/api/"


def wants_json() -> bool:
    """Whether the caller is an API client rather than a browser."""
    if request.path.startswith(API_PREFIX):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return (
        best == "application/json"
        and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    """Return an RFC 9457 ``application/problem+json`` response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def page(status: int, title: str, detail: str, **context: Any) -> Response:
    """Return the HTML error page, or a problem document for API callers."""
    if wants_json():
        return problem(status, title, detail)
    html = render_template("error.html", status=status, title=title, detail=detail, **context)
    return Response(html, status=status, mimetype="text/html")


def safe_next_url(target: str | None) -> str | None:
    """Return ``target`` when it stays on this site or a login host, else None.

    Kept: a path on this site, or an absolute ``http(s)`` URL whose host (host[:port],
    exactly) is one of ``AUTHZ_LOGIN_HOSTS``, the sites protected through forward auth.
    Anything else could send a freshly logged-in browser to an attacker (open redirect).
    """
    if not target:
        return None
    # "//host" and "/\\host" are read by browsers as another host; a backslash or a
    # control character is read differently by browsers and by urlsplit.
    if "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return None
    if target.startswith("/"):
        if target.startswith("//"):
            return None
        parts = urlsplit(target)
        return target if not (parts.scheme or parts.netloc) else None
    return target if _login_host_url(target) else None


#: An absolute URL's scheme and authority, exactly: no user info, no escapes.
_ABSOLUTE = re.compile(
    r"(https?)://([A-Za-z0-9.-]+(?::[0-9]{1,5})?)(?:[/?#]|\Z)", re.IGNORECASE | re.ASCII
)


def _login_host_url(target: str) -> bool:
    """Whether ``target`` is an absolute http(s) URL on one of the configured login hosts."""
    hosts = current_app.config["AUTHZ"].login_hosts
    if not hosts:
        return False
    # Threat: "https://good@evil", "https://good.evil", "https:evil", "https:///evil":
    # the authority must be a bare host[:port] that equals a configured one, and
    # urlsplit must read the same authority (no parser disagreement).
    match = _ABSOLUTE.match(target)
    if match is None:
        return False
    parts = urlsplit(target)
    if parts.netloc.lower() != match[2].lower() or parts.scheme.lower() != match[1].lower():
        return False
    allowed = {h.strip().lower() for h in hosts.split(",") if h.strip()}
    return match[2].lower() in allowed


def login_required() -> BaseResponse:
    """The answer to an anonymous request the policy refuses: login redirect or 401."""
    if wants_json():
        response = problem(401, "Unauthorized", "log in first (POST /login), then retry")
        # A 401 must name a scheme; this service authenticates by a session cookie.
        response.headers["WWW-Authenticate"] = 'Cookie realm="authz", form-action="/login"'
        return response
    target = request.full_path if request.query_string else request.path
    return redirect(url_for("auth.login", next=target))


def bad_token() -> Response:
    """The answer to a bearer token that is unknown, revoked or expired: 401, always JSON."""
    response = problem(401, "Unauthorized", "the bearer token is invalid, expired or revoked")
    response.headers["WWW-Authenticate"] = 'Bearer realm="authz", error="invalid_token"'
    return response


def forbidden(subject: str) -> Response:
    """The answer to a logged-in request the policy refuses.

    The page keeps the site's layout and the navigation this subject may follow (the
    account was resolved by the middleware already; the links are decided from the
    in-memory snapshot, so rendering costs no database round trip). The answer is the
    same whether or not a route serves the path: a refused subject cannot map the
    routes by telling 403 from 404.
    """
    detail = f"Your account ({subject}) and its roles may not {request.method} {request.path}."
    if wants_json():
        return problem(403, "Forbidden", detail)
    html = render_template("forbidden.html", detail=detail)
    return Response(html, status=403, mimetype="text/html")


def unavailable(reason: str) -> Response:
    """The answer when the engine cannot decide: 503, never an allow; logged once, here."""
    reason = " ".join(reason.split())  # one line per 503, whatever the driver says
    current_app.logger.error("503 for %s %s: %s", request.method, request.path, reason)
    # Rendering must not load the user again from a database that just failed.
    g._login_user = AnonymousUserMixin()
    response = page(
        503,
        "Service unavailable",
        "Authorization is unavailable; try again shortly.",
        hide_nav=True,
    )
    response.headers["Retry-After"] = "5"
    return response


def register_error_handlers(app: Flask) -> None:
    """Render HTTP errors as pages or problem documents; map engine and database faults to 503."""

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        return page(e.code or 500, e.name, e.description or "")

    @app.errorhandler(EngineUnavailable)
    def engine_down(e: EngineUnavailable) -> Response:
        return unavailable(f"engine unavailable: {e}")

    @app.errorhandler(SQLAlchemyError)
    def database_down(e: SQLAlchemyError) -> Response:
        return unavailable(f"database error: {database_reason(e)}")
