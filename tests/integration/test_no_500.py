"""No input reaches a 500: every GET route, as an admin, with hostile query strings.

Bad input is the caller's fault and is answered 4xx with the reason (or, when the engine
cannot decide, 503); a 500 would mean an error escaped the view unhandled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authz import AuthzError
from authz import Change
from authz import PolicyEngine
from authz import Rule
from authz.expectations import ExpectationsBroken
from authz.index import BrokenPattern
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import dispose
from tests.conftest import make_app

DATA = Path(__file__).resolve().parents[1] / "data"

#: Query parameters any view reads, each given every hostile value in turn.
PARAMS = (
    "page",
    "per_page",
    "since",
    "until",
    "q",
    "subject",
    "path",
    "method",
    "actor",
    "effect",
    "member",
    "role",
    "next",
)
#: Raw (already percent-encoded) query values.
HOSTILE = [
    "99999999999999999999",  # past a 64-bit SQL OFFSET
    "9" * 400,
    "-1",
    "0",
    "1e9",
    "0001-01-01T00:00:00%2B14:00",  # below datetime's range once converted to UTC
    "9999-12-31T23:59:59-14:00",  # above it
    "9999-12-31",  # "through the end of that day" would pass the last datetime
    "2026-13-45",
    "%ff%fe%80",  # not UTF-8
    "%ed%a0%80",  # a UTF-8-encoded surrogate
    "%00%01%1b%7f",  # control characters
    "%0d%0aX-Injected:%201",
    "%e2%80%a8%c2%85",  # U+2028, U+0085
    "A" * 10_000,
    "Dave@Example.com",
    "%2e%2e%2f%2e%2e%2fadmin",
    "(((((((((((a",
    "..%2F",
]


def sample_path(rule: str, values: dict[str, str]) -> str:
    """Fill a route's <converters> with real values (an existing id, email, role)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return quote(values.get(name, "1"), safe="@")

    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", fill, rule)


def get_routes(app: Flask, values: dict[str, str]) -> list[str]:
    paths = []
    for rule in app.url_map.iter_rules():
        if "GET" in (rule.methods or set()) and rule.endpoint not in ("static",):
            paths.append(sample_path(rule.rule, values))
    return sorted(set(paths))


def admin_client(app: Flask) -> FlaskClient:
    client = app.test_client()
    response = AuthActions(client).login(ADMIN, ADMIN_PASSWORD)
    assert response.status_code == 302
    return client


def engine_of(app: Flask) -> PolicyEngine:
    return app.extensions["authz"]


@pytest.fixture
def admin(app: Flask) -> FlaskClient:
    return admin_client(app)


def route_values(app: Flask) -> dict[str, str]:
    engine = engine_of(app)
    rule = next(r for r in engine.rules() if r.ptype == "p")
    link = next(r for r in engine.rules() if r.ptype == "g")
    return {
        "rule_id": rule.id,
        "email": USER,
        "role": "user",
        "filename": "style.css",
        "id": link.id,
    } | {"rule_id": rule.id}


def assert_no_5xx(client: FlaskClient, paths: list[str], values: list[str]) -> int:
    """Request every path with every value in every parameter; return how many were made."""
    made = 0
    failures = []
    for path in paths:
        for value in values:
            query = "&".join(f"{name}={value}" for name in PARAMS)
            for accept in ("text/html", "application/json"):
                response = client.get(f"{path}?{query}", headers={"Accept": accept})
                made += 1
                if response.status_code >= 500:
                    failures.append(f"{response.status_code} GET {path}?{query[:120]}")
    assert not failures, "\n".join(failures[:20])
    return made


def test_every_get_route_survives_hostile_query_strings(app: Flask, admin: FlaskClient) -> None:
    paths = get_routes(app, route_values(app))
    assert "/admin/audit" in paths and "/api/v1/audit" in paths and "/admin/reach" in paths
    assert assert_no_5xx(admin, paths, HOSTILE) >= len(paths) * len(HOSTILE)


@pytest.mark.parametrize(
    "query",
    [
        "page=99999999999999999999",
        "page=1000001",
        "since=0001-01-01T00:00:00%2B14:00",
        "until=9999-12-31T23:59:59-14:00",
        "since=not-a-date",
        "since=" + "1" * 100,
    ],
)
@pytest.mark.parametrize("path", ["/admin/audit", "/api/v1/audit"])
def test_bad_audit_parameters_are_400_with_the_reason(
    admin: FlaskClient, path: str, query: str
) -> None:
    response = admin.get(f"{path}?{query}")
    assert response.status_code == 400
    name = query.split("=")[0]
    assert name in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/admin/audit", "/api/v1/audit"])
def test_the_last_day_a_date_can_name_is_accepted(admin: FlaskClient, path: str) -> None:
    assert admin.get(f"{path}?until=9999-12-31&since=0001-01-01").status_code == 200


@pytest.fixture
def regex_app(tmp_path: Path) -> Iterator[Flask]:
    """An app whose model matches paths with regexMatch, holding a regex keyMatch2 cannot read."""
    app = make_app(tmp_path, model_path=str(DATA / "models" / "rbac_regex_object.conf"))
    engine_of(app).apply(
        Change.adding(
            Rule.of("p", "admin", ".*", "GET", "allow"),
            Rule.of("p", "anonymous", "^/login$", "GET", "allow"),
            Rule.of("p", "anonymous", "^/login$", "POST", "allow"),
            # As keyMatch2 this does not compile (":b|c)" reads as a parameter).
            Rule.of("p", "user", "/a/(?:b|c)", "GET", "allow"),
        ),
        actor="test",
        source="cli",
    )
    yield app
    dispose(app)


def test_reach_under_a_regex_object_model(regex_app: Flask) -> None:
    """/admin/reach lists patterns with the model's own function, not keyMatch2."""
    client = admin_client(regex_app)
    response = client.get("/admin/reach?path=/a/b&method=GET")
    assert response.status_code == 200
    assert "user" in response.get_data(as_text=True)
    paths = get_routes(regex_app, route_values(regex_app))
    assert_no_5xx(client, paths, HOSTILE[:6])


def subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found


def instance(cls: type) -> AuthzError:
    if cls is ExpectationsBroken:  # takes the results it names, none here
        return ExpectationsBroken([])
    for args in ((), ("reason",), ([],), (1, 2)):
        try:
            return cls(*args)  # type: ignore[no-any-return]
        except TypeError:
            continue
    raise AssertionError(f"cannot build {cls.__name__}")


@pytest.mark.parametrize("blueprint", ["admin", "api"])
def test_every_authz_error_has_a_4xx_or_503_answer(app: Flask, blueprint: str) -> None:
    """Each AuthzError subclass a view may let through finds a handler: 4xx, or 503."""
    errors = subclasses(AuthzError)
    assert len(errors) >= 8
    prefix = "/admin/rules" if blueprint == "admin" else "/api/v1/policy/rules"
    for cls in errors:
        error = instance(cls)
        with app.test_request_context(prefix):
            handler = app._find_error_handler(error, [blueprint])
            assert handler is not None, f"{cls.__name__} has no handler on {blueprint}"
            response = app.make_response(handler(error))
        expected = {503} if cls.__name__ == "EngineUnavailable" else set(range(400, 500))
        assert response.status_code in expected, (cls.__name__, response.status_code)


def test_broken_pattern_is_an_authz_error() -> None:
    assert issubclass(BrokenPattern, AuthzError)


def test_every_parameter_alone_survives_nul_and_bad_bytes(app: Flask, admin: FlaskClient) -> None:
    """Each parameter on its own, so an earlier parameter's 400 cannot hide a later one's 503
    (PostgreSQL refuses a NUL in a query parameter)."""
    paths = get_routes(app, route_values(app))
    failures = []
    for path in paths:
        for name in PARAMS:
            for value in ("a%00b", "%ff%fe"):
                response = admin.get(f"{path}?{name}={value}")
                if response.status_code >= 500:
                    failures.append(f"{response.status_code} GET {path}?{name}={value}")
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("email", ["a\x00b@example.com", "\x00", "user@example.com\x00"])
def test_a_nul_in_the_login_email_is_a_failed_login_not_503(app: Flask, email: str) -> None:
    """A login with a NUL in the email is answered as any wrong credentials."""
    from tests.conftest import csrf_token

    client = app.test_client()
    token = csrf_token(client)
    response = client.post(
        "/login", data={"email": email, "password": "whatever-1234", "csrf_token": token}
    )
    assert response.status_code < 500
    assert "Wrong email or password." in response.get_data(as_text=True)
