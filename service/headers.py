"""Security headers on every response: pages, API, errors, redirects, static files.

A small ``after_request`` hook rather than Flask-Talisman: what we need is a fixed set of
headers plus one rule of our own (no caching of anything but static files), and
Talisman's extras (HTTPS redirects, per-request nonces, feature policies) are either the
reverse proxy's job or unused, since no page carries inline script or style. Flask runs
``after_request`` for the responses of error handlers and of the app-level
``before_request`` middleware too, so a 302, 401, 403, 404 or 503 carries them as well.
"""

from __future__ import annotations

from flask import Flask
from flask import Response
from flask import request

from service.config import Env

#: No inline script or style anywhere: an injected ``<script>`` or ``style=`` is inert.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Sent on every response.
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Production only (served over TLS): browsers then refuse plain HTTP for a year.
HSTS = "max-age=31536000; includeSubDomains"
#: A static file's answers that may be cached (the file, a range of it, "not modified").
_STATIC_SERVED = frozenset({200, 206, 304})


def init_app(app: Flask) -> None:
    """Add the security headers to every response of ``app``."""
    production = app.config["AUTHZ"].env is Env.PRODUCTION

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers[name] = value
        if production:
            response.headers["Strict-Transport-Security"] = HSTS
        if request.endpoint != "static" or response.status_code not in _STATIC_SERVED:
            # Pages, forms and API answers may carry a user's data or a CSRF token: a
            # shared cache or the browser's history must not keep them. Static files
            # are the same for everyone and keep Flask's revalidation headers.
            response.headers["Cache-Control"] = "no-store"
            response.headers.pop("Expires", None)
        return response
