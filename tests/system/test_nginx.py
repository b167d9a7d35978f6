"""Forward auth behind a real nginx: ``auth_request`` to /auth/forward guards an upstream.

Three real processes on 127.0.0.1: the service under gunicorn (nginx is its only trusted
proxy), a tiny upstream that echoes what it was asked, and nginx in front of both with
the configuration the README gives. Clients talk HTTP to nginx, as a browser would,
or straight to the service from another loopback address (127.0.0.2: not the proxy).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.system.conftest import Server
from tests.system.conftest import free_port
from tests.system.proxied import RULES
from tests.system.proxied import Browser
from tests.system.proxied import Echo
from tests.system.proxied import logged_in
from tests.system.proxied import logs_in_and_lands_back
from tests.system.proxied import raw_get
from tests.system.proxied import serve_authz
from tests.system.proxied import slipped_path_is_refused

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx)"
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


@dataclass
class Site:
    base: str  # nginx
    service: str  # the service, straight
    token: str
    nginx_log: Path


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


def test_anonymous_logs_in_and_lands_back_on_the_upstream(site: Site) -> None:
    logs_in_and_lands_back(site.base)


def test_allowed_reaches_the_upstream_and_denied_gets_403(site: Site) -> None:
    browser = logged_in(site.base)
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
    slipped_path_is_refused(site.base, path)


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
