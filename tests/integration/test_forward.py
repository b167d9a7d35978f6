"""Forward auth (/auth/forward): a reverse proxy asks whether to serve another request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authz import Change
from authz import Rule
from authz import metrics
from service import tokens
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import dispose
from tests.conftest import make_app
from tests.conftest import make_token

PROXY = "10.0.0.5"
STRANGER = "198.51.100.7"
APP_HOST = "app.example.com"
RULES = (
    Rule.of("p", "user", "/app/*", "GET|POST", "allow"),
    Rule.of("p", "user", "/app/secret/*", ".*", "deny"),
    Rule.of("p", "anonymous", "/public/*", "GET", "allow"),
    Rule.of("p", "reader", "/reports/*", "GET", "allow"),
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(
        tmp_path,
        trusted_proxies=f"{PROXY}, 192.168.0.0/24",
        login_hosts=f"{APP_HOST}, shop.example.com:8443",
        decision_log="full",
        decision_log_file=str(tmp_path / "decisions.jsonl"),
    )
    with app.app_context():
        app.extensions["authz"].apply(Change.adding(*RULES), actor="test", source="cli")
    yield app
    dispose(app)


def nginx(uri: str, method: str = "GET", host: str = APP_HOST) -> dict[str, str]:
    """The headers nginx's auth_request location sets (see the README configuration)."""
    return {"X-Original-URI": uri, "X-Original-Method": method, "X-Original-Host": host}


def traefik(uri: str, method: str = "GET", host: str = APP_HOST) -> dict[str, str]:
    """The headers Traefik ForwardAuth and Caddy forward_auth set."""
    return {
        "X-Forwarded-Uri": uri,
        "X-Forwarded-Method": method,
        "X-Forwarded-Host": host,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.9",
    }


def ask(
    client: FlaskClient,
    headers: dict[str, str],
    peer: str = PROXY,
    method: str = "GET",
    path: str = "/auth/forward",
) -> TestResponse:
    return client.open(path, method=method, headers=headers, environ_base={"REMOTE_ADDR": peer})


def login(client: FlaskClient) -> None:
    assert AuthActions(client).login().status_code == 302


# -- answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("style", [nginx, traefik])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_allowed_user_gets_200_with_subject_and_roles(
    client: FlaskClient, style, method: str
) -> None:
    login(client)
    response = ask(client, style("/app/page?x=1"), method=method)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Auth-Subject"] == USER
    assert response.headers["X-Auth-Roles"] == "anonymous,user"
    assert response.get_data() == b""


def test_decides_the_original_request_not_auth_forward(client: FlaskClient) -> None:
    # Nobody holds a rule for /auth/forward; the answer is about the original request.
    login(client)
    assert ask(client, nginx("/app/x")).status_code == 200
    assert ask(client, nginx("/app/secret/x")).status_code == 403
    assert ask(client, nginx("/elsewhere")).status_code == 403


def test_original_method_is_decided(client: FlaskClient) -> None:
    login(client)
    assert ask(client, nginx("/app/x", "POST")).status_code == 200
    assert ask(client, nginx("/app/x", "DELETE")).status_code == 403
    # HEAD is decided as GET, as for the service's own pages.
    anonymous = ask(FlaskClient(client.application), nginx("/public/a", "HEAD"))
    assert anonymous.status_code == 200


def test_denied_user_gets_403(client: FlaskClient) -> None:
    login(client)
    response = ask(client, traefik("/app/secret/plans"))
    assert response.status_code == 403
    assert "X-Auth-Subject" not in response.headers
    assert len(response.get_data()) < 200


def test_anonymous_allowed_where_the_policy_allows_it(client: FlaskClient) -> None:
    response = ask(client, nginx("/public/logo.png"))
    assert response.status_code == 200
    assert response.headers["X-Auth-Subject"] == "anonymous"
    assert response.headers["X-Auth-Roles"] == ""


@pytest.mark.parametrize(
    ("style", "scheme"), [(nginx, "http"), (traefik, "https")], ids=["nginx", "traefik"]
)
def test_anonymous_gets_401_with_a_login_link_back(client: FlaskClient, style, scheme: str) -> None:
    response = ask(client, style("/app/page?a=1&b=%C3%A9"))
    assert response.status_code == 401
    assert "X-Auth-Subject" not in response.headers
    login_url = response.headers["X-Auth-Login"]
    parts = urlsplit(login_url)
    assert parts.path == "/login"
    assert parse_qs(parts.query)["next"] == [f"{scheme}://{APP_HOST}/app/page?a=1&b=%C3%A9"]
    assert response.headers["WWW-Authenticate"].startswith("Cookie ")


def test_redirect_mode_answers_302_for_traefik(client: FlaskClient) -> None:
    response = ask(client, traefik("/app/page"), path="/auth/forward?login=redirect")
    assert response.status_code == 302
    assert response.headers["Location"] == response.headers["X-Auth-Login"]
    assert "next=https%3A%2F%2Fapp.example.com%2Fapp%2Fpage" in response.headers["Location"]


def test_login_then_next_lands_on_the_protected_site(client: FlaskClient) -> None:
    login_url = ask(client, nginx("/app/page?q=1")).headers["X-Auth-Login"]
    next_url = parse_qs(urlsplit(login_url).query)["next"][0]
    response = AuthActions(client).login(next=next_url)
    assert response.status_code == 302
    assert response.headers["Location"] == "http://app.example.com/app/page?q=1"
    assert ask(client, nginx("/app/page?q=1")).status_code == 200


def test_bearer_token_is_the_subject(app: Flask, client: FlaskClient) -> None:
    secret = make_token(app, "ci", ("reader",))
    headers = {**traefik("/reports/q3"), "Authorization": f"Bearer {secret}"}
    response = ask(client, headers)
    assert response.status_code == 200
    assert response.headers["X-Auth-Subject"] == "token:ci"
    assert response.headers["X-Auth-Roles"] == "reader"
    assert "Set-Cookie" not in response.headers
    headers = {**traefik("/app/x"), "Authorization": f"Bearer {secret}"}
    assert ask(client, headers).status_code == 403


def test_revoked_or_unknown_token_gets_401(app: Flask, client: FlaskClient) -> None:
    secret = make_token(app, "ci", ("reader",))
    with app.app_context():
        tokens.revoke("ci", actor="test", source="test")
    for bad in (secret, "authz_" + "A" * 43, "nonsense"):
        response = ask(client, {**nginx("/reports/q3"), "Authorization": f"Bearer {bad}"})
        assert response.status_code == 401
        assert "invalid_token" in response.headers["WWW-Authenticate"]
        assert response.headers["X-Auth-Login"].startswith("/login?next=")


# -- who may ask -------------------------------------------------------------------------


@pytest.mark.parametrize("style", [nginx, traefik])
@pytest.mark.parametrize("peer", [STRANGER, "127.0.0.1"])
def test_headers_from_an_untrusted_peer_decide_nothing(
    client: FlaskClient, style, peer: str
) -> None:
    login(client)
    response = ask(client, style("/app/x"), peer=peer)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert "trusted proxy" in response.get_json()["detail"]
    assert "X-Auth-Subject" not in response.headers


def test_untrusted_peer_without_headers_gets_400_too(client: FlaskClient) -> None:
    assert ask(client, {}, peer=STRANGER).status_code == 400


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Original-URI": "/app/x"},
        {"X-Original-Method": "GET"},
        {"X-Forwarded-Uri": "/app/x", "X-Forwarded-Host": APP_HOST},
        # Both styles at once: a proxy passing the client's other-style headers through.
        {**nginx("/app/x"), **traefik("/app/secret/x")},
        {"X-Original-URI": "/app/x", "X-Forwarded-Method": "GET"},
        {"X-Forwarded-Uri": "/app/x", "X-Original-Method": "GET"},
        nginx("app/x"),
        nginx("http://evil.example/app/x"),
        nginx("*"),
    ],
)
def test_missing_or_contradictory_headers_get_400(client: FlaskClient, headers) -> None:
    login(client)
    response = ask(client, headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["detail"]


# -- paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "/app/%2e%2e/admin",
        "/app/%2E%2E/admin",
        "/app/../admin",
        "/app/./x",
        "/app/..",
        "/app/x%2fy",
        "/app/x%2Fy",
        "/app//x",
        "/app/x\\y",
        "/app/x%5cy",
        "/app/x%00",
        "/app/x%0a",
        "/app/x%ff",
        "/app/x%c0%af",
        "/app/x\xff",
        "/app/x y",
        "/app/x#frag",
        # Java servers drop path parameters: "/app/secret;x/plans" is /app/secret/plans.
        "/app/secret;x/plans",
        "/app/x;jsessionid=1",
        # Decoded twice by some backends: "%252e%252e" becomes "..".
        "/app/%252e%252e/admin",
        "/app/x%252fy",
    ],
)
def test_paths_a_backend_could_route_differently_are_denied(client: FlaskClient, uri: str) -> None:
    login(client)
    response = ask(client, nginx(uri))
    assert response.status_code == 403, response.get_data(as_text=True)
    assert "X-Auth-Subject" not in response.headers
    assert response.headers["X-Auth-Reason"].startswith("refused")


def test_non_utf8_header_bytes_are_denied(client: FlaskClient) -> None:
    login(client)
    # WSGI hands header bytes over as latin-1 text; b"\xc3\x28" is not UTF-8.
    environ = {"REMOTE_ADDR": PROXY, "HTTP_X_ORIGINAL_URI": "/app/\xc3\x28"}
    response = client.get(
        "/auth/forward", environ_base=environ, headers={"X-Original-Method": "GET"}
    )
    assert response.status_code == 403


def test_encoded_utf8_is_decided_decoded(client: FlaskClient) -> None:
    login(client)
    assert ask(client, nginx("/app/caf%C3%A9")).status_code == 200
    assert ask(client, nginx("/app/caf\xc3\xa9")).status_code == 200  # raw bytes, as WSGI


@pytest.mark.parametrize("uri", ["/app/" + "a" * 3000, "/app/x?" + "q" * 9000, "/a" * 70])
def test_too_long_gets_414(client: FlaskClient, uri: str) -> None:
    login(client)
    assert ask(client, nginx(uri)).status_code == 414


@pytest.mark.parametrize("method", ["G T", "GET\r\nX: y", "X" * 40, ""])
def test_bad_methods_never_allowed(client: FlaskClient, method: str) -> None:
    login(client)
    environ = {"REMOTE_ADDR": PROXY, "HTTP_X_ORIGINAL_METHOD": method}
    response = client.get(
        "/auth/forward", environ_base=environ, headers={"X-Original-URI": "/app/x"}
    )
    assert response.status_code in (400, 403, 414)


def test_query_is_not_part_of_the_object(client: FlaskClient) -> None:
    login(client)
    assert ask(client, nginx("/app/x?/app/secret/y")).status_code == 200
    assert ask(client, nginx("/app/secret/y?/app/x")).status_code == 403


def test_only_the_exact_path_is_forward_auth(client: FlaskClient) -> None:
    login(client)
    # Another spelling is an ordinary page request, decided (and refused) as such.
    assert ask(client, nginx("/app/x"), path="/auth/forward/").status_code in (403, 404)
    assert ask(client, nginx("/app/x"), path="/auth//forward").status_code == 400


# -- failing closed, logging, counting ----------------------------------------------


def test_engine_that_cannot_decide_gives_503(app: Flask, client: FlaskClient) -> None:
    login(client)
    app.extensions["authz"]._snapshot = None  # the policy is gone: nothing can be decided
    app.extensions["authz"].load = lambda: None  # and it does not come back
    response = ask(client, nginx("/app/x"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"


def test_each_decision_is_logged_with_the_proxy_as_caller(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    login(client)
    before = list(metrics.FORWARD.counts)
    assert ask(client, nginx("/app/x")).status_code == 200
    assert ask(client, traefik("/app/secret/x", "POST"), peer="192.168.0.7").status_code == 403
    assert ask(client, nginx("/app/x"), peer=STRANGER).status_code == 400  # not a decision
    lines = [json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [(x["object"], x["action"], x["allowed"], x["caller"]) for x in lines] == [
        ("/app/x", "GET", True, f"forward:{PROXY}"),
        ("/app/secret/x", "POST", False, "forward:192.168.0.7"),
    ]
    assert lines[0]["subject"] == USER and lines[0]["rule"][:2] == ["p", "user"]
    assert metrics.FORWARD.counts[metrics.ALLOW] == before[metrics.ALLOW] + 1
    assert metrics.FORWARD.counts[metrics.DENY] == before[metrics.DENY] + 1


def test_roles_follow_policy_changes(app: Flask, client: FlaskClient) -> None:
    login(client)
    assert ask(client, nginx("/app/x")).headers["X-Auth-Roles"] == "anonymous,user"
    with app.app_context():
        app.extensions["authz"].apply(
            Change.adding(Rule.of("g", USER, "reader")), actor="test", source="cli"
        )
    assert ask(client, nginx("/app/x")).headers["X-Auth-Roles"] == "anonymous,reader,user"
    assert ask(client, nginx("/reports/q3")).status_code == 200


@pytest.mark.parametrize("uri", ["/", "/app/", "/app/.well-known/x", "/app/a.b", "/app/~u"])
def test_plain_paths_are_decided(client: FlaskClient, uri: str) -> None:
    login(client)
    expected = 403 if uri == "/" else 200  # "/" is granted to users for GET only
    assert ask(client, nginx(uri, "POST")).status_code == expected


def test_login_link_stays_on_the_protected_site_with_a_public_url(tmp_path: Path) -> None:
    # The session cookie is host-only: logging in on the service's own host would leave
    # the protected site without it (and the browser in a loop).
    app = make_app(
        tmp_path, trusted_proxies=PROXY, login_hosts=APP_HOST, public_url="https://authz.example"
    )
    try:
        response = ask(app.test_client(), traefik("/app/x"))
        assert response.status_code == 401
        assert response.headers["X-Auth-Login"].startswith("/login?next=https%3A%2F%2Fapp.")
    finally:
        dispose(app)


def test_repeated_uri_headers_are_never_allowed(client: FlaskClient) -> None:
    login(client)
    headers = [
        ("X-Original-URI", "/app/x"),
        ("X-Original-URI", "/app/secret/y"),
        ("X-Original-Method", "GET"),
    ]
    response = client.get("/auth/forward", headers=headers, environ_base={"REMOTE_ADDR": PROXY})
    assert response.status_code == 403


def test_without_the_middleware_the_route_fails_closed(app: Flask) -> None:
    app.before_request_funcs[None].remove(app.extensions["authz.middleware"])
    response = ask(app.test_client(), nginx("/public/x"))
    assert response.status_code == 503
    assert "X-Auth-Subject" not in response.headers
