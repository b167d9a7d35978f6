"""Forward auth behind a real Caddy: ``forward_auth`` to /auth/forward guards an upstream.

As test_nginx.py, with Caddy in front: the service under gunicorn (Caddy is its only
trusted proxy), the same echoing upstream, and Caddy running the README's Caddyfile
(plain HTTP on a loopback port, no admin endpoint, its state in the test's tmp).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from authz import Rule
from tests.conftest import USER
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

CADDY = shutil.which("caddy") or next(
    (p for p in ("/usr/bin/caddy", "/usr/local/bin/caddy") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(
    CADDY is None, reason="caddy is not installed (Debian: apt-get install caddy)"
)

#: test_nginx.py's site, plus a page anonymous users may see.
SITE_RULES = (*RULES, Rule.of("p", "anonymous", "/public/*", "GET", "allow"))

#: The Caddyfile under test: the README's site block, with addresses filled in and served
#: over plain HTTP on loopback only; the global block keeps Caddy off the machine's ports.
CADDYFILE = """\
{{
	admin off
	auto_https off
}}

http://127.0.0.1:{port} {{
	bind 127.0.0.1
	# The service's own pages on the protected site (it decides them itself).
	@authz path /login /logout /register /static/*
	handle @authz {{
		reverse_proxy 127.0.0.1:{service}
	}}
	handle {{
		# route: in this order (Caddy would sort request_header after forward_auth).
		route {{
			# A client's own X-Auth-* headers never reach the upstream, nor their
			# underscore spellings (X-Auth_Subject), which CGI and WSGI read as the same.
			request_header -X-Auth*
			request_header -X_Auth*
			forward_auth 127.0.0.1:{service} {{
				uri /auth/forward
				copy_headers X-Auth-Subject X-Auth-Roles
				# Anonymous: to the login page, which sends the browser back afterwards.
				@login status 401
				handle_response @login {{
					redir * {{rp.header.X-Auth-Login}} 302
				}}
			}}
			reverse_proxy 127.0.0.1:{upstream}
		}}
	}}
}}
"""


@dataclass
class Site:
    base: str  # Caddy
    service: Server  # the service, straight
    token: str


@pytest.fixture
def site(tmp_path: Path, start_server) -> Iterator[Site]:
    caddy_port = free_port()
    service, service_port, secret = serve_authz(
        tmp_path, start_server, SITE_RULES, f"127.0.0.1:{caddy_port}"
    )
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(
        CADDYFILE.format(port=caddy_port, service=service_port, upstream=upstream.server_address[1])
    )
    home = tmp_path / "caddy-home"
    caddy_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
    }
    log = tmp_path / "caddy.log"
    caddy: subprocess.Popen[bytes] | None = None
    try:
        service.wait_until_serving()
        with log.open("wb") as out:
            caddy = subprocess.Popen(
                [CADDY, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                cwd=tmp_path,
                env=caddy_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proxied = Server(caddy, f"http://127.0.0.1:{caddy_port}", log)
        proxied.wait_until_serving("/login")
        yield Site(proxied.base, service, secret)
    finally:
        if caddy is not None and caddy.poll() is None:
            caddy.terminate()  # SIGTERM: a graceful stop
            try:
                caddy.wait(10)
            except subprocess.TimeoutExpired:
                caddy.kill()
                caddy.wait()
        upstream.shutdown()
        upstream.server_close()
        thread.join(5)


def test_anonymous_logs_in_and_lands_back_on_the_upstream(site: Site) -> None:
    logs_in_and_lands_back(site.base)


def test_allowed_reaches_the_upstream_and_denied_gets_403(site: Site) -> None:
    browser = logged_in(site.base)
    status, _headers, body = browser.open(site.base + "/app/reports", data={"a": "1"})
    assert status == 200 and "upstream: POST /app/reports" in body
    assert "body: a=1\n" in body  # asking the service did not use up the request body
    assert f"subject: {USER}" in body and "roles: anonymous,user" in body
    status, _headers, body = browser.open(site.base + "/app/secret/plans")
    assert status == 403 and "upstream" not in body
    status, _headers, body = browser.open(site.base + "/elsewhere")
    assert status == 403 and "upstream" not in body


def test_a_bearer_token_works_through_caddy(site: Site) -> None:
    client = Browser()
    bearer = {"Authorization": f"Bearer {site.token}"}
    status, _headers, body = client.open(site.base + "/reports/q3", headers=bearer)
    assert status == 200 and "subject: token:ci" in body and "roles: reader" in body
    status, _headers, body = client.open(site.base + "/app/x", headers=bearer)
    assert status == 403 and "upstream" not in body
    bad = {"Authorization": "Bearer authz_" + "A" * 43}
    status, headers, body = client.open(site.base + "/reports/q3", headers=bad)
    assert status == 302 and "upstream" not in body
    assert headers["Location"].startswith("/login?next=")


def test_a_client_sent_auth_header_never_reaches_the_upstream(site: Site) -> None:
    spoof = {"X-Auth-Subject": "admin@example.com", "X-Auth-Roles": "admin"}
    status, _headers, body = raw_get(site.base, "/app/x", spoof)
    assert status == 302 and "upstream" not in body  # anonymous, whatever it claims
    bearer = {**spoof, "Authorization": f"Bearer {site.token}"}
    status, _headers, body = raw_get(site.base, "/reports/q3", bearer)
    assert status == 200
    assert "subject: token:ci\n" in body and "roles: reader\n" in body  # Caddy's, not the client's
    assert "admin" not in body
    # Allowed as anonymous (who holds no role): the claimed identity is still not passed on.
    status, _headers, body = raw_get(site.base, "/public/news", spoof)
    assert status == 200 and "upstream: GET /public/news" in body
    assert "subject: anonymous\n" in body and "admin" not in body
    # Spellings Caddy passes on as other headers, but CGI and WSGI read as X-Auth-Roles.
    aliases = {"X-Auth_Roles": "admin", "X_Auth_Roles": "admin", "X_Auth-Subject": "admin"}
    for path, extra in (("/public/news", {}), ("/reports/q3", bearer)):
        status, _headers, body = raw_get(site.base, path, {**aliases, **extra})
        assert status == 200 and "other: \n" in body and "admin" not in body, body


def test_spoofed_uri_headers_through_caddy_decide_nothing(site: Site) -> None:
    bearer = {"Authorization": f"Bearer {site.token}"}
    # Caddy sets X-Forwarded-Uri and X-Forwarded-Method itself, over the client's.
    forwarded = {"X-Forwarded-Uri": "/reports/q3", "X-Forwarded-Method": "GET", **bearer}
    status, _headers, body = raw_get(site.base, "/app/x", forwarded)
    assert status == 403 and "upstream" not in body
    # The reader may GET reports, not POST them, whatever method the client names.
    status, _headers, body = Browser().open(
        site.base + "/reports/q3", data={"a": "1"}, headers={"X-Forwarded-Method": "GET", **bearer}
    )
    assert status == 403 and "upstream" not in body
    # The nginx style, sent by the client, passes through Caddy: the service refuses both
    # styles at once, so nothing is decided and nothing is served.
    original = {"X-Original-URI": "/reports/q3", "X-Original-Method": "GET", **bearer}
    status, _headers, body = raw_get(site.base, "/app/x", original)
    assert status == 400 and "upstream" not in body
    assert "both X-Original-URI and X-Forwarded-Uri" in body
    # The login link names the site Caddy served, not a host the client claims.
    status, headers, _body = raw_get(site.base, "/app/x", {"X-Forwarded-Host": "evil.example"})
    assert status == 302
    assert headers["Location"].startswith("/login?next=http%3A%2F%2F127.0.0.1%3A")


@pytest.mark.parametrize(
    "path",
    [
        "/app/%2e%2e/secret/x",
        "/app/x%2f..%2fsecret",
        "/app//secret/x",
        "/app/x%00",
        "/app/./secret/x",
        "/app/x;/../secret/y",
    ],
)
def test_paths_spelled_to_slip_past_are_refused(site: Site, path: str) -> None:
    slipped_path_is_refused(site.base, path)


def test_with_the_service_down_nothing_is_served(site: Site) -> None:
    bearer = {"Authorization": f"Bearer {site.token}"}
    status, _headers, body = raw_get(site.base, "/reports/q3", bearer)
    assert status == 200 and "upstream" in body
    assert site.service.terminate() == 0
    for path, headers in (("/reports/q3", bearer), ("/public/news", {})):
        status, _headers, body = raw_get(site.base, path, headers)
        assert status == 502 and "upstream" not in body  # Caddy: the auth gateway is down
