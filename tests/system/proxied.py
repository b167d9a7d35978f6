"""What the proxy system tests share: the service behind a proxy, an echoing upstream, a
browser that shows redirects, raw requests, and the scenarios every proxy must pass."""

from __future__ import annotations

import http.client
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from authz import Change
from authz import Rule
from service import tokens
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import Backend
from tests.conftest import dispose
from tests.conftest import make_app
from tests.system.conftest import BIN
from tests.system.conftest import clean_env
from tests.system.conftest import free_port

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
RULES = (
    Rule.of("p", "user", "/app/*", "GET|POST", "allow"),
    Rule.of("p", "user", "/app/secret/*", ".*", "deny"),
    Rule.of("p", "reader", "/reports/*", "GET", "allow"),
)


class Echo(BaseHTTPRequestHandler):
    """The upstream: echoes the request that reached it, its X-Auth-* headers and its body."""

    def _answer(self) -> None:
        subject = "|".join(self.headers.get_all("X-Auth-Subject") or [])
        roles = "|".join(self.headers.get_all("X-Auth-Roles") or [])
        other = sorted(
            f"{name}={value}"
            for name, value in self.headers.items()
            if name.lower().replace("_", "-").startswith("x-auth-")
            and name.lower() not in ("x-auth-subject", "x-auth-roles")
        )
        length = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(length).decode(errors="replace")
        body = (
            f"upstream: {self.command} {self.path}\nsubject: {subject}\nroles: {roles}\n"
            f"other: {' '.join(other)}\nbody: {sent}\n"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


def serve_authz(tmp_path: Path, start_server, rules, login_host: str):  # noqa: ANN001, ANN201
    """The service under gunicorn on a free loopback port, for a proxy on 127.0.0.1.

    Its database (SQLite, in ``tmp_path / "data"``) holds the default policy, an admin, a
    user, ``rules`` and a token ``ci`` with role ``reader``; returns the server, its port
    and the token's secret.
    """
    data = tmp_path / "data"
    data.mkdir()
    service_port = free_port()
    app = make_app(data, backend=Backend())
    try:
        with app.app_context():
            app.extensions["authz"].apply(Change.adding(*rules), actor="test", source="cli")
            _token, secret = tokens.create("ci", roles=["reader"], actor="test", source="test")
    finally:
        dispose(app)
    env = clean_env(
        AUTHZ_ENV="testing",
        AUTHZ_DATABASE_URL=f"sqlite:///{data / 'authz.db'}",
        AUTHZ_SECRET_KEY="test-secret-key",
        AUTHZ_INSTANCE_PATH=str(data / "instance"),
        AUTHZ_TRUSTED_PROXIES="127.0.0.1",
        AUTHZ_LOGIN_HOSTS=login_host,
        AUTHZ_ARGON2_TIME_COST="1",
        AUTHZ_ARGON2_MEMORY_COST="8",
        AUTHZ_ARGON2_PARALLELISM="1",
    )
    service = start_server(
        [
            str(BIN / "gunicorn"),
            "--workers",
            "1",
            "--bind",
            f"127.0.0.1:{service_port}",
            "service:create_app()",
        ],
        port=service_port,
        cwd=tmp_path,
        env=env,
        name="gunicorn",
    )
    return service, service_port, secret


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Browser:
    """A client with a cookie jar that shows redirects instead of following them."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def open(
        self, url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def login(self, login_url: str) -> tuple[int, dict[str, str], str]:
        status, _headers, page = self.open(login_url)
        assert status == 200, page
        match = _CSRF.search(page)
        assert match is not None
        form = {"email": USER, "password": USER_PASSWORD, "csrf_token": match.group(1)}
        next_value = urllib.parse.parse_qs(urllib.parse.urlsplit(login_url).query)["next"]
        form["next"] = next_value[0]
        return self.open(login_url.split("?", 1)[0], data=form)


def raw_get(base: str, path: str, headers: dict[str, str], source: str = "127.0.0.1") -> tuple:
    """A GET sent as given (no normalization by a client library) from ``source``."""
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=10, source_address=(source, 0)
    )
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


# -- scenarios every proxy passes ---------------------------------------------------------


def logs_in_and_lands_back(base: str) -> None:
    """Anonymous on a page: to the login page, then back on the upstream, as the user."""
    browser = Browser()
    status, headers, _ = browser.open(base + "/app/page?x=1&y=%C3%A9")
    assert status == 302
    login_url = urllib.parse.urljoin(base, headers["Location"])
    assert login_url.startswith(base + "/login?next=")
    status, headers, body = browser.login(login_url)
    assert status == 302, body
    assert headers["Location"] == base + "/app/page?x=1&y=%C3%A9"
    status, _headers, body = browser.open(headers["Location"])
    assert status == 200
    assert "upstream: GET /app/page?x=1&y=%C3%A9" in body
    assert f"subject: {USER}" in body and "roles: anonymous,user" in body


def logged_in(base: str) -> Browser:
    """A browser logged in as the user, through the proxy's login redirect."""
    browser = Browser()
    _status, headers, _ = browser.open(base + "/app/")
    browser.login(urllib.parse.urljoin(base, headers["Location"]))
    return browser


def slipped_path_is_refused(base: str, path: str) -> None:
    """A logged-in request whose path is spelled to slip past the rules never gets served."""
    cookie = "; ".join(f"{c.name}={c.value}" for c in logged_in(base).jar)
    status, _headers, body = raw_get(base, path, {"Cookie": cookie})
    assert status in (400, 403), body
    assert "upstream" not in body
