"""Attacks on tokens, the check API and forward auth that held from the start (regressions)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from authz import Change
from authz import Rule
from service import tokens
from service.responses import safe_next_url
from tests.conftest import AuthActions
from tests.conftest import dispose
from tests.conftest import make_app

API = "/api/v1"
PROXY = "10.0.0.5"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path, trusted_proxies=PROXY, login_hosts="app.example.com")
    with app.app_context():
        app.extensions["authz"].apply(
            Change.adding(
                Rule.of("p", "checker", "/api/v1/check", "POST", "allow"),
                Rule.of("p", "reader", "/reports/*", "GET", "allow"),
                Rule.of("p", "reader", "/reports/secret", "GET", "deny"),
            ),
            actor="test",
            source="cli",
        )
    yield app
    dispose(app)


def secret_of(app: Flask, name: str, *roles: str) -> str:
    with app.app_context():
        return tokens.create(name, roles=list(roles), actor="t", source="t")[1]


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "/\\evil.com",
        "https://app.example.com@evil.com",
        "https://app.example.com.evil.com/",
        "https:evil.com",
        "https:///evil.com",
        "https://app.example.com:443/",
        "https://app.example.com%2eevil.com",
        "https://app.example.com\u3002evil.com/",
        " https://evil.com",
        "\u3000//evil.com",
        "/\t/evil.com",
        "javascript:alert(1)",
    ],
)
def test_next_never_leaves_the_site_or_the_login_hosts(app: Flask, target: str) -> None:
    with app.test_request_context("/"):
        assert safe_next_url(target) is None


def test_forward_and_check_never_answer_5xx_to_odd_input(app: Flask) -> None:
    rnd = random.Random(7)
    parts = ["/", ".", "%", "2e", "2f", "5c", "?", "#", ";", "a", "\\", " ", "\x00", "\xc3",
             "\xa9", "\xff", "%C0%AE", "..", "//", "%25", "\t", "+"]  # fmt: skip
    client = app.test_client()
    reader = secret_of(app, "fz", "reader")
    checker = secret_of(app, "chk", "checker")
    for _ in range(300):
        uri = "/" + "".join(rnd.choice(parts) for _ in range(rnd.randint(0, 16)))
        method = rnd.choice(["GET", "get", "HEAD", "X" * 40, "G T", "\xff", "", "POST"])
        answer = client.get(
            "/auth/forward",
            headers={
                "Authorization": f"Bearer {reader}",
                "X-Original-URI": uri,
                "X-Original-Method": method,
                "X-Original-Host": rnd.choice(["a", "\xff", "[::1]:80", "a b"]),
            },
            environ_base={"REMOTE_ADDR": PROXY},
        )
        assert answer.status_code < 500, (uri, method)
        if answer.status_code == 200:
            assert uri.split("?", 1)[0].rstrip("/") != "/reports/secret"
        checked = client.post(
            f"{API}/check",
            json={"subject": "token:fz", "path": uri, "method": method},
            headers={"Authorization": f"Bearer {checker}"},
        )
        assert checked.status_code in (200, 400), (uri, method)


def test_a_bearer_request_never_acts_as_the_cookie_user(app: Flask) -> None:
    client = app.test_client()
    assert AuthActions(client).login().status_code == 302  # user@example.com, cookie set
    roleless = secret_of(app, "nobody")
    # The cookie is ignored: not the user's page, not the user's CSRF exemption.
    account = client.get("/account", headers={"Authorization": f"Bearer {roleless}"})
    assert account.status_code in (302, 403)
    ended = client.post(
        "/account/sessions/end-all", headers={"Authorization": f"Bearer {roleless}"}
    )
    assert ended.status_code in (302, 403)
    assert client.get("/account").status_code == 200  # the cookie session still lives


def test_check_body_cap_holds_with_a_lying_content_length(app: Flask) -> None:
    import io

    client = app.test_client()
    checker = secret_of(app, "chk", "checker")
    body = b'{"subject":"anonymous","path":"/' + b"a" * 200_000 + b'","method":"GET"}'
    answer = client.post(
        f"{API}/check",
        input_stream=io.BytesIO(body),
        headers={
            "Authorization": f"Bearer {checker}",
            "Content-Type": "application/json",
            "Content-Length": "100",
        },
    )
    assert answer.status_code in (400, 413)  # never a decision on a body past the cap
