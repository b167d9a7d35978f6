"""Forward auth at ``/auth/forward``: decide a request made to another site, for its proxy.

A reverse proxy (nginx ``auth_request``, Traefik ``ForwardAuth``, Caddy ``forward_auth``)
asks this endpoint before it serves a request to its upstream. The question is about the
original request, named in headers the proxy sets:

- nginx: ``X-Original-URI``, ``X-Original-Method`` (host: ``X-Original-Host`` or ``Host``);
- Traefik and Caddy: ``X-Forwarded-Uri``, ``X-Forwarded-Method``, ``X-Forwarded-Host``.

Those headers are believed from a trusted proxy only (``AUTHZ_TRUSTED_PROXIES``): anyone
else gets 400 and no decision. The subject is the caller's own credentials, resolved as
the middleware resolves them (a bearer token, else this service's session cookie, else
``anonymous``); the object and action are canonicalized as the service's own pages are.

Answers: 200 with ``X-Auth-Subject`` and ``X-Auth-Roles``; 401 without a subject, with
``X-Auth-Login`` naming the login page that leads back to the original URL; 403 when
denied or when the path could be read two ways; 414 when too long; 400 for headers that
are missing, contradictory or not sent by a trusted proxy; 503 when the engine cannot
decide. Bodies are empty: proxies discard them.

The middleware hands requests for this path here before its own decision (the
question is never "may this subject GET /auth/forward"): see middleware.make_authorize.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import quote
from urllib.parse import unquote_to_bytes

from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from sqlalchemy.exc import SQLAlchemyError

from authz import ANONYMOUS
from authz import EngineUnavailable
from authz import PolicyEngine
from authz import RequestTooLarge
from authz import UnsafePath
from authz import metrics
from authz.errors import database_reason
from authz.paths import MAX_PATH
from authz.paths import MAX_SEGMENTS
from authz.paths import canonical_action
from authz.paths import canonical_object
from authz.paths import check_size
from service.proxies import PEER_KEY

#: The path proxies call. Only this exact spelling is answered here.
PATH = "/auth/forward"
#: The longest original URI read, query included (longer: 414 before any parsing).
MAX_URI = 8192
#: Query parameter of the forward URL asking for a 302 to the login page instead of a
#: 401 (Traefik has no way to turn a 401 into a redirect; nginx and Caddy do).
REDIRECT_PARAM = "login=redirect"
#: Subjects whose effective roles are remembered (per policy snapshot).
MAX_CACHED_SUBJECTS = 10_000
#: WSGI names of the two header styles: (URI, method, host).
_NGINX = ("HTTP_X_ORIGINAL_URI", "HTTP_X_ORIGINAL_METHOD", "HTTP_X_ORIGINAL_HOST")
_FORWARDED = ("HTTP_X_FORWARDED_URI", "HTTP_X_FORWARDED_METHOD", "HTTP_X_FORWARDED_HOST")
#: A host as a URL may carry it: a name or an address, an optional port.
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?\Z")
#: A path of plain ASCII segments: no escape, no "//", no dot segment, no backslash.
_PLAIN = re.compile(r"(?:/[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*)*/?\Z").match
#: Characters a request target never carries raw (HTTP/1.1 request-target grammar).
_NOT_IN_TARGET = re.compile(r"[\x00-\x20\x7f#]")
#: Spellings some backends route differently from the path the policy sees: ";" starts
#: path parameters that Java servers drop ("/a;x/b" is "/a/b" to Tomcat), and "%25" is a
#: "%" that a backend decoding twice turns into another escape ("%252e%252e" -> "..").
_OTHER_ROUTING = re.compile(r";|%25")

#: Given a WSGI environ: the subject of its credentials, or None for a bad bearer token.
SubjectOf = Callable[[dict[str, str]], str | None]


class BadForward(Exception):
    """The forward request itself is malformed or untrusted (answered 400)."""


def original(environ: dict[str, str]) -> tuple[str, str, str | None]:
    """Return the original (URI, method, host) named by a trusted proxy's headers.

    :raises BadForward: when the caller is not a trusted proxy, a header is missing, or
        the two header styles are mixed.
    """
    # Threat: any client can send these headers. Only a configured proxy's are believed;
    # from anyone else, nothing is decided (a decision on a client's say-so is a bypass).
    if PEER_KEY not in environ:
        raise BadForward(
            "X-Original-*/X-Forwarded-* headers are only read from a trusted proxy "
            "(AUTHZ_TRUSTED_PROXIES); this request did not come from one"
        )
    nginx_uri = environ.get(_NGINX[0])
    forwarded_uri = environ.get(_FORWARDED[0])
    # Threat: a proxy sets its own style and passes the client's headers of the other
    # style through untouched. Preferring either style would let the client choose the
    # path decided; with both present nothing is decided.
    if nginx_uri is not None and forwarded_uri is not None:
        raise BadForward("both X-Original-URI and X-Forwarded-Uri are present")
    if nginx_uri is not None:
        names, uri = _NGINX, nginx_uri
    elif forwarded_uri is not None:
        names, uri = _FORWARDED, forwarded_uri
    else:
        raise BadForward("missing X-Original-URI (nginx) or X-Forwarded-Uri (Traefik, Caddy)")
    other = _FORWARDED if names is _NGINX else _NGINX
    if other[1] in environ:
        raise BadForward(f"{_header(other[1])} is present with {_header(names[0])}")
    method = environ.get(names[1])
    if not method:
        raise BadForward(f"missing {_header(names[1])}")
    host = environ.get(names[2]) or environ.get("HTTP_HOST")
    if host is not None and names is _FORWARDED:
        host = host.rsplit(",", 1)[-1].strip()  # the nearest proxy's value
    return uri, method.strip(), host


def _header(wsgi_name: str) -> str:
    """The header's name as the proxies spell it (``HTTP_X_ORIGINAL_URI``: X-Original-URI)."""
    name = "-".join(w.capitalize() for w in wsgi_name[5:].split("_"))
    return name.replace("-Uri", "-URI") if name.startswith("X-Original") else name


def original_object(uri: str) -> str:
    """The object to decide for an original request URI (raw, as sent on the wire).

    :raises RequestTooLarge: for a URI or path over the limits.
    :raises BadForward: for something that is not an origin-form request target.
    :raises UnsafePath: for a path a backend could route differently from the policy.
    """
    if len(uri) > MAX_URI:
        raise RequestTooLarge(f"the original URI is longer than {MAX_URI} characters")
    raw = uri.split("?", 1)[0]
    if len(raw) > MAX_PATH:
        check_size(raw)
    if not raw.startswith("/"):
        raise BadForward("the original URI must be a path starting with '/'")
    if _PLAIN(raw):
        # Nothing to decode and nothing canonical_object could refuse (the common case).
        if raw.count("/") > MAX_SEGMENTS:
            check_size(raw)
        return raw
    if _NOT_IN_TARGET.search(raw):
        # Spaces, controls and '#' never appear raw in a request target.
        raise UnsafePath("a space, control character or '#' in the original path")
    if _OTHER_ROUTING.search(raw):
        raise UnsafePath("';' or an encoded '%' in the original path")
    path = raw
    if "%" in raw or not raw.isascii():
        try:
            # The upstream's router decodes escapes (WSGI hands the header over as
            # latin-1 text of its bytes); the policy decides the decoded path.
            path = unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError) as e:
            raise UnsafePath("the original path is not valid UTF-8") from e
    return canonical_object(path, raw)


def _unverified() -> bool:
    """Whether this request's session is an account that has not verified its email."""
    user = g.get("_login_user")
    return getattr(user, "unverified_as", None) is not None


def login_location(scheme: str, host: str | None, uri: str) -> str:
    """The login page, with ``next`` the original URL (absolute when the host is known).

    A path, not a URL on AUTHZ_PUBLIC_URL: the login must happen on the protected site
    itself (the proxy routes /login there to this service), because the session cookie
    is host-only and is sent back to /auth/forward only by that site's requests.
    """
    target = f"{scheme}://{host}{uri}" if host and _HOST.match(host) else uri
    return f"/login?next={quote(target, safe='')}"


def make_forward(
    app: Flask, engine: PolicyEngine, ensure_loaded: Callable[[], None], subject_of: SubjectOf
) -> Callable[[dict[str, str], str], Response]:
    """Return the handler of ``/auth/forward`` for ``app``, its lookups done once."""
    log = app.extensions["authz.decisions"]
    record = metrics.FORWARD.record
    clock = time.perf_counter
    ALLOW, DENY, ERROR = metrics.ALLOW, metrics.DENY, metrics.ERROR

    # Effective roles per subject, for the snapshot they were computed on: a busy proxy
    # asks about the same few subjects over and over.
    # One (snapshot, roles) pair, replaced whole: roles computed on a snapshot are only
    # ever written into that snapshot's dict, so a request still working on an older
    # snapshot cannot leave a removed role in the new one's.
    cached: list[tuple[object, dict[str, str]]] = [(None, {})]

    def roles_of(subject: str) -> str:
        snapshot = engine.snapshot
        owner, roles_cache = cached[0]
        if owner is not snapshot or len(roles_cache) >= MAX_CACHED_SUBJECTS:
            roles_cache = {}
            cached[0] = (snapshot, roles_cache)
        roles = roles_cache.get(subject)
        if roles is None:
            roles = roles_cache[subject] = ",".join(snapshot.roles_for(subject))
        return roles

    def refuse(status: int, reason: str) -> Response:
        # A problem document, small: a proxy shows it to nobody, a person debugging reads it.
        from service.responses import problem

        response = problem(status, _TITLES[status], reason)
        response.headers["X-Auth-Reason"] = " ".join(reason.split())[:200]
        return response

    def forward(environ: dict[str, str], query: str) -> Response:
        """Decide the original request named by a trusted proxy."""
        started = clock()
        try:
            uri, method, host = original(environ)
            obj = original_object(uri)
            act = canonical_action(method)
        except BadForward as e:
            return refuse(400, str(e))
        except RequestTooLarge as e:
            record(DENY, clock() - started)
            return refuse(414, f"refused: {e}")
        except UnsafePath as e:
            # Denied, not "bad request": nginx passes only 401 and 403 on to the client.
            record(DENY, clock() - started)
            return refuse(403, f"refused: {e}")
        try:
            ensure_loaded()
            subject = subject_of(environ)
            if subject is None:
                record(DENY, clock() - started)
                response = refuse(401, "the bearer token is invalid, expired or revoked")
                response.headers["WWW-Authenticate"] = 'Bearer realm="authz", error="invalid_token"'
                return to_login(response, environ, uri, host, query)
            unverified = subject != ANONYMOUS and _unverified()
            if unverified:
                # Decided as the default role by the service's own pages, but the
                # upstream would read that role's name as one person shared by every
                # unverified account: here such an account counts as anonymous.
                subject = ANONYMOUS
            decision = engine.decide(subject, obj, act)
        except (EngineUnavailable, SQLAlchemyError) as e:
            # Fail closed: when the engine cannot decide, nobody gets in.
            record(ERROR, clock() - started)
            reason = database_reason(e) if isinstance(e, SQLAlchemyError) else str(e)
            current_app.logger.error("503 for forward %s %s: %s", act, obj, reason)
            response = refuse(503, f"cannot decide: {' '.join(reason.split())}")
            response.headers["Retry-After"] = "5"
            return response
        if log.enabled:
            rule = decision.rule
            log.write(
                decision_id=log.new_id(),
                subject=subject,
                obj=obj,
                action=act,
                allowed=decision.allowed,
                rule=rule.as_list() if rule is not None else None,
                revision=engine.revision,
                caller=f"forward:{environ[PEER_KEY]}",
            )
        if decision.allowed:
            record(ALLOW, clock() - started)
            response = Response(status=200)
            headers = response.headers
            headers["X-Auth-Subject"] = subject
            headers["X-Auth-Roles"] = roles_of(subject)
            return response
        record(DENY, clock() - started)
        if unverified:
            return refuse(
                403, "verify your email address first (see the mail sent at registration)"
            )
        if subject != ANONYMOUS:
            return Response(status=403)
        response = Response(status=401)
        # A 401 names a scheme: the session cookie, got by logging in.
        response.headers["WWW-Authenticate"] = 'Cookie realm="authz", form-action="/login"'
        return to_login(response, environ, uri, host, query)

    def to_login(
        response: Response, environ: dict[str, str], uri: str, host: str | None, query: str
    ) -> Response:
        """Add the login link to a 401 (or make it a 302 there, when the proxy asks so)."""
        scheme = environ.get("wsgi.url_scheme", "http")
        location = login_location(scheme, host, uri)
        response.headers["X-Auth-Login"] = location
        if REDIRECT_PARAM in query.split("&"):
            response.status_code = 302
            response.headers["Location"] = location
        return response

    return forward


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    414: "URI too long",
    503: "Service unavailable",
}


def register_route(app: Flask) -> None:
    """Give ``PATH`` a route, so the router matches it instead of building a 404 per call.

    The view never runs while the middleware is installed (it answers first); without
    the middleware it fails closed.
    """

    def forward_auth_unavailable() -> Response:
        response = Response(status=503)
        response.headers["X-Auth-Reason"] = "forward auth runs in the authorization middleware"
        return response

    app.add_url_rule(
        PATH,
        "forward_auth",
        forward_auth_unavailable,
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
    )
