"""The open-redirect guard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from service.config import Settings
from service.responses import safe_next_url

LOGIN_HOSTS = "app.example.com, Shop.Example.com:8443"


@pytest.fixture(autouse=True)
def _settings() -> Iterator[None]:
    """An app context whose settings name the login hosts (absolute ``next`` URLs)."""
    app = Flask(__name__)
    app.config["AUTHZ"] = Settings(login_hosts=LOGIN_HOSTS)
    with app.app_context():
        yield


@pytest.mark.parametrize("target", ["/", "/admin/", "/reports?id=1&x=2", "/a/b#frag"])
def test_same_site_paths_are_kept(target: str) -> None:
    assert safe_next_url(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "//evil.example",
        "///evil.example",
        "https://evil.example/",
        "http:/evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "evil.example/",
        "/\t/evil.example",
        "/\r\n/evil",
        "/a\\b",
    ],
)
def test_anything_that_could_leave_the_site_is_refused(target: str | None) -> None:
    assert safe_next_url(target) is None


@pytest.mark.parametrize(
    "target",
    [
        "https://app.example.com/",
        "http://app.example.com",
        "https://app.example.com/reports?id=1&next=https://evil.example",
        "HTTPS://APP.EXAMPLE.COM/x",
        "https://shop.example.com:8443/cart#top",
        "https://app.example.com?x=1",
    ],
)
def test_absolute_urls_on_login_hosts_are_kept(target: str) -> None:
    assert safe_next_url(target) == target


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        # User info: browsers go to the host after the "@".
        "https://app.example.com@evil.example/",
        "https://app.example.com:443@evil.example/",
        "https://a@app.example.com/",
        "https://app.example.com%40evil.example/",
        # Look-alikes and suffixes.
        "https://app.example.com.evil.example/",
        "https://evilapp.example.com/",
        "https://app.example.co/",
        # A port not configured (exact host[:port] only), and a configured one missing.
        "https://app.example.com:8443/",
        "https://shop.example.com/",
        # Backslashes, which browsers read as slashes.
        "https://evil.example\\@app.example.com/",
        "https://app.example.com\\@evil.example/",
        "https:\\\\app.example.com/",
        # Scheme-relative, scheme-only, no host, other schemes.
        "//app.example.com/",
        "///app.example.com/",
        "https:app.example.com/",
        "https:/app.example.com/",
        "https:///app.example.com/",
        "ftp://app.example.com/",
        "javascript://app.example.com/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        # Control characters and whitespace the URL parser would drop.
        "https://app.example.com\t.evil.example/",
        "https://evil.example\n/app.example.com",
        " https://app.example.com/",
        "https://app.example.com /",
        # Non-ASCII look-alikes (a Kelvin sign, a full-width dot).
        "https://app.example.\u212aom/",
        "https://app\uff0eexample.com/",
        "https://[::1]/",
    ],
)
def test_absolute_urls_elsewhere_are_refused(target: str) -> None:
    assert safe_next_url(target) is None


def test_no_login_hosts_means_no_absolute_urls() -> None:
    app = Flask(__name__)
    app.config["AUTHZ"] = Settings()
    with app.app_context():
        assert safe_next_url("https://app.example.com/") is None
        assert safe_next_url("/app") == "/app"
