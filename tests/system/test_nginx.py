"""Forward auth behind a real nginx: ``auth_request`` to /auth/forward guards an upstream.

Three real processes on 127.0.0.1: the service under gunicorn (nginx is its only trusted
proxy), a tiny upstream that echoes what it was asked, and nginx in front of both with
the configuration the README gives. Clients talk HTTP to nginx, as a browser would,
or straight to the service from another loopback address (127.0.0.2: not the proxy).
"""

from __future__ import annotations

import http.client
import http.cookiejar
import re
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from authz import Change
from authz import Rule
from service import tokens
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import Backend
from tests.conftest import dispose
from tests.conftest import make_app
from tests.system.conftest import BIN
from tests.system.conftest import Server
from tests.system.conftest import clean_env
from tests.system.conftest import free_port

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx)"
)

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
RULES = (
    Rule.of("p", "user", "/app/*", "GET|POST", "allow"),
    Rule.of("p", "user", "/app/secret/*", ".*", "deny"),
    Rule.of("p", "reader", "/reports/*", "GET", "allow"),
)

#: The nginx configuration under test (the README's, with ports and paths filled in).
NGINX_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    upstream authz {{ server 127.0.0.1:{service}; }}
    upstream app {{ server 127.0.0.1:{upstream}; }}

    server {{
        listen 127.0.0.1:{port};

        # Every request to the site is decided first.
        location / {{
            auth_request /_authz;
            auth_request_set $auth_subject $upstream_http_x_auth_subject;
            auth_request_set $auth_roles $upstream_http_x_auth_roles;
            auth_request_set $auth_login $upstream_http_x_auth_login;
            error_page 401 = @login;
            proxy_set_header Host $http_host;
            # The upstream learns who asked; a client's own X-Auth-* headers are replaced.
            proxy_set_header X-Auth-Subject $auth_subject;
            proxy_set_header X-Auth-Roles $auth_roles;
            proxy_pass http://app;
        }}

        location = /_authz {{
            internal;
            proxy_pass http://authz/auth/forward;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # The other header style, never the client's (the service refuses both at once).
            proxy_set_header X-Forwarded-Uri "";
            proxy_set_header X-Forwarded-Method "";
            proxy_set_header X-Forwarded-Host "";
        }}

        # Anonymous: to the login page, which sends the browser back afterwards.
        location @login {{
            return 302 $auth_login;
        }}

        # The service's own pages (login, its assets) on the same site; the service
        # decides them itself.
        location ~ ^/(login|logout|register|static/) {{
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_pass http://authz;
        }}
    }}
}}
"""


class Echo(BaseHTTPRequestHandler):
    """The protected upstream: says which request reached it, and who nginx said asked."""

    def _answer(self) -> None:
        body = (
            f"upstream: {self.command} {self.path}\n"
            f"subject: {self.headers.get('X-Auth-Subject', '')}\n"
            f"roles: {self.headers.get('X-Auth-Roles', '')}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


@dataclass
class Site:
    base: str  # nginx
    service: str  # the service, straight
    token: str
    nginx_log: Path


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


@pytest.fixture
def site(tmp_path: Path, start_server) -> Iterator[Site]:
    nginx_port = free_port()
    service, service_port, secret = serve_authz(
        tmp_path, start_server, RULES, f"127.0.0.1:{nginx_port}"
    )
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp_path,
            port=nginx_port,
            service=service_port,
            upstream=upstream.server_address[1],
        )
    )
    nginx: subprocess.Popen[bytes] | None = None
    try:
        service.wait_until_serving()
        nginx = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "nginx-error.log")]
            + ["-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        proxied = Server(nginx, f"http://127.0.0.1:{nginx_port}", tmp_path / "nginx-error.log")
        proxied.wait_until_serving("/login")
        yield Site(proxied.base, service.base, secret, tmp_path / "nginx-error.log")
    finally:
        if nginx is not None and nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        upstream.shutdown()
        upstream.server_close()
        thread.join(5)


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


def test_anonymous_logs_in_and_lands_back_on_the_upstream(site: Site) -> None:
    browser = Browser()
    status, headers, _ = browser.open(site.base + "/app/page?x=1&y=%C3%A9")
    assert status == 302
    login_url = urllib.parse.urljoin(site.base, headers["Location"])
    assert login_url.startswith(site.base + "/login?next=")
    status, headers, body = browser.login(login_url)
    assert status == 302, body
    assert headers["Location"] == site.base + "/app/page?x=1&y=%C3%A9"
    status, _headers, body = browser.open(headers["Location"])
    assert status == 200
    assert "upstream: GET /app/page?x=1&y=%C3%A9" in body
    assert f"subject: {USER}" in body and "roles: anonymous,user" in body


def test_allowed_reaches_the_upstream_and_denied_gets_403(site: Site) -> None:
    browser = Browser()
    _status, headers, _ = browser.open(site.base + "/app/")
    browser.login(urllib.parse.urljoin(site.base, headers["Location"]))
    status, _headers, body = browser.open(site.base + "/app/reports", data={"a": "1"})
    assert status == 200 and "upstream: POST /app/reports" in body
    status, _headers, body = browser.open(site.base + "/app/secret/plans")
    assert status == 403 and "upstream" not in body
    status, _headers, body = browser.open(site.base + "/elsewhere")
    assert status == 403 and "upstream" not in body


def test_a_bearer_token_works_through_nginx(site: Site) -> None:
    client = Browser()
    bearer = {"Authorization": f"Bearer {site.token}"}
    status, _headers, body = client.open(site.base + "/reports/q3", headers=bearer)
    assert status == 200 and "subject: token:ci" in body and "roles: reader" in body
    status, _headers, body = client.open(site.base + "/app/x", headers=bearer)
    assert status == 403
    bad = {"Authorization": "Bearer authz_" + "A" * 43}
    status, headers, _ = client.open(site.base + "/reports/q3", headers=bad)
    assert status == 302 and headers["Location"].startswith(site.base + "/login?next=")


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


def test_spoofed_headers_through_nginx_are_overwritten(site: Site) -> None:
    spoof = {
        "X-Original-URI": "/public/ok",
        "X-Original-Method": "GET",
        "X-Auth-Subject": "admin@example.com",
        "X-Auth-Roles": "admin",
    }
    status, _headers, body = raw_get(site.base, "/app/x", spoof)
    assert status == 302 and "upstream" not in body  # anonymous, whatever it claims
    bearer = {**spoof, "Authorization": f"Bearer {site.token}"}
    status, _headers, body = raw_get(site.base, "/reports/q3", bearer)
    assert status == 200
    assert "subject: token:ci" in body and "roles: reader" in body  # nginx's, not the client's
    # The other header style, sent by the client, is blanked by the configuration.
    other = {"X-Forwarded-Uri": "/reports/q3", "X-Forwarded-Method": "GET", **bearer}
    status, _headers, body = raw_get(site.base, "/app/x", other)
    assert status == 403


@pytest.mark.parametrize(
    "path", ["/app/%2e%2e/secret/x", "/app/x%2f..%2fsecret", "/app//secret/x", "/app/x%00"]
)
def test_paths_spelled_to_slip_past_are_refused(site: Site, path: str) -> None:
    browser = Browser()
    _status, headers, _ = browser.open(site.base + "/app/")
    browser.login(urllib.parse.urljoin(site.base, headers["Location"]))
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.jar)
    status, _headers, body = raw_get(site.base, path, {"Cookie": cookie})
    assert status in (400, 403), body
    assert "upstream" not in body


def test_headers_sent_straight_to_the_service_decide_nothing(site: Site) -> None:
    headers = {"X-Original-URI": "/reports/q3", "X-Original-Method": "GET"}
    headers["Authorization"] = f"Bearer {site.token}"
    # From 127.0.0.2: the service trusts nginx's address (127.0.0.1) only.
    status, answer, body = raw_get(site.service, "/auth/forward", headers, source="127.0.0.2")
    assert status == 400, body
    assert "trusted proxy" in body and "X-Auth-Subject" not in answer
    forwarded = {"X-Forwarded-Uri": "/reports/q3", "X-Forwarded-Method": "GET"}
    status, _answer, _ = raw_get(site.service, "/auth/forward", forwarded, source="127.0.0.2")
    assert status == 400
