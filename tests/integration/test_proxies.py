"""Trusted proxies: forwarded headers believed only from configured peers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask import jsonify

from service import proxies
from service.config import ConfigError
from service.config import load_settings
from tests.conftest import csrf_token
from tests.conftest import dispose
from tests.conftest import make_app

PROXY = "10.0.0.5"


def _with_echo(app: Flask) -> Flask:
    """Add a page (allowed to anyone) that shows what the app believes about the client."""
    with app.app_context():
        from authz import Change
        from authz import Rule

        app.extensions["authz"].apply(
            Change.adding(Rule("p", ("anonymous", "/echo", "GET", "allow"))),
            actor="test",
            source="cli",
        )

    @app.get("/echo")
    def echo() -> object:
        from flask import request

        return jsonify(
            client=proxies.client_address(),
            trusted=proxies.from_trusted_proxy(),
            scheme=request.scheme,
            host=request.host,
        )

    return app


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Flask]:
    app = _with_echo(make_app(tmp_path, trusted_proxies=f"{PROXY}, 192.168.0.0/24"))
    yield app
    dispose(app)


def _echo(app: Flask, peer: str, **headers: str) -> dict[str, object]:
    client = app.test_client()
    response = client.get("/echo", environ_base={"REMOTE_ADDR": peer}, headers=headers)
    assert response.status_code == 200
    return response.get_json()  # type: ignore[no-any-return]


SPOOF = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
}


def test_untrusted_peer_cannot_spoof(proxied: Flask) -> None:
    seen = _echo(proxied, "198.51.100.7", **SPOOF)
    assert seen == {
        "client": "198.51.100.7",
        "trusted": False,
        "scheme": "http",
        "host": "localhost",
    }


def test_loopback_is_not_trusted_by_default(app: Flask) -> None:
    _with_echo(app)
    seen = _echo(app, "127.0.0.1", **SPOOF)
    assert seen["client"] == "127.0.0.1" and seen["trusted"] is False
    assert seen["host"] == "localhost"


def test_trusted_proxy_headers_believed(proxied: Flask) -> None:
    seen = _echo(proxied, PROXY, **SPOOF)
    assert seen == {
        "client": "203.0.113.9",
        "trusted": True,
        "scheme": "https",
        "host": "evil.example",
    }


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        # The client prepends a fake address: the proxy appends the real one, right-most.
        ("1.1.1.1, 203.0.113.9", "203.0.113.9"),
        # Two trusted proxies in a row: skip both, take the first untrusted from the right.
        ("1.1.1.1, 203.0.113.9, 192.168.0.3", "203.0.113.9"),
        # Every hop trusted: the left-most one is the nearest known client.
        ("192.168.0.4, 192.168.0.3", "192.168.0.4"),
        # A hop wrote garbage: nothing left of it is believed.
        ("1.1.1.1, not-an-address, 192.168.0.3", "192.168.0.3"),
        ("", PROXY),
        ("203.0.113.9:4711", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
    ],
)
def test_right_most_untrusted_address(proxied: Flask, forwarded_for: str, client: str) -> None:
    assert _echo(proxied, PROXY, **{"X-Forwarded-For": forwarded_for})["client"] == client


def test_bad_forwarded_host_and_proto_ignored(proxied: Flask) -> None:
    seen = _echo(
        proxied,
        PROXY,
        **{"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "evil.example/path?x"},
    )
    assert seen["scheme"] == "http" and seen["host"] == "localhost"


def test_login_throttle_keys_on_the_real_client(tmp_path: Path) -> None:
    """Behind the proxy, one client's failures throttle that client, not its neighbours."""
    app = make_app(
        tmp_path, trusted_proxies=PROXY, login_max_failures=1, login_address_max_failures=4
    )
    try:

        def login(peer: str, forwarded_for: str, email: str) -> int:
            client = app.test_client()
            token = csrf_token(client)
            response = client.post(
                "/login",
                data={"email": email, "password": "wrong-password-1", "csrf_token": token},
                headers={"X-Forwarded-For": forwarded_for},
                environ_base={"REMOTE_ADDR": peer},
            )
            return response.status_code

        # An attacker connecting directly names the victim's address: not believed, so the
        # failures count against the attacker's own address and the victim stays free.
        direct = [login("198.51.100.1", "203.0.113.10", f"d{i}@example.com") for i in range(5)]
        assert direct[-1] == 429  # per-address limit: login_address_max_failures
        assert login(PROXY, "203.0.113.10", "v@example.com") == 401
        # Through the proxy, the per-address limit applies to the real client only.
        proxied = [login(PROXY, "1.2.3.4, 203.0.113.9", f"a{i}@example.com") for i in range(5)]
        assert proxied[-1] == 429
        assert login(PROXY, "203.0.113.10", "w@example.com") == 401
    finally:
        dispose(app)


def test_setting_is_checked_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AUTHZ_TRUSTED_PROXIES"):
        load_settings(
            {"AUTHZ_TRUSTED_PROXIES": "10.0.0.1, proxy.example"},
            default_instance=tmp_path,
            dotenv=False,
        )
