"""What is decided is what is served: a path parameter is acted on only in its canonical spelling.

The attack (issue 7): a helpdesk role may manage ``/admin/users/*`` except the boss's
account, denied by a row naming its exact path. Were the view to normalize the email it
is given, ``/admin/users/BOSS@example.com`` would pass the deny row and still act on the
boss. Every route with a parameter is walked from the app's URL map, so a new route is
tried here as soon as it exists, and every spelling of its parameter must be refused,
for every method, with the target left as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule as UrlRule
from werkzeug.test import TestResponse

from authz import Change
from authz import Rule
from authz.expectations import expectation
from service import tokens
from service import users
from service.converters import CONVERTERS
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import Backend
from tests.conftest import dispose
from tests.conftest import make_app

#: The protected account, role and rows. The names hold the letters that Unicode case
#: mapping and compatibility forms play with: k (Kelvin sign), i (dotted and dotless),
#: s (long s), fi (the ligature).
TARGET = "kofi.boss@example.com"
ROLE = "fiskal"
TARGET_RULE = Rule.of("p", ROLE, "/fiskal", "GET", "allow")
TARGET_LINK = Rule.of("g", TARGET, ROLE)
TARGET_TEST = expectation(ROLE, "GET", "/fiskal", "allow")
HELPDESK = "help@example.com"
HELPDESK_PASSWORD = "helpdesk-password-1"

#: Parameters that no view normalizes, and why they need no canonical converter.
UNCONVERTED = {
    # send_from_directory serves the file of that exact name (safe_join refuses "..");
    # the policy grants /static/* as a whole.
    ("static", "filename"),
    # Signed link tokens: the view checks the signature of the exact string it is given,
    # so no other spelling passes; the policy grants /verify/*, /password/*, /register/*.
    ("auth.verify", "token"),
    ("auth.reset_password", "token"),
    ("auth.register_invited", "token"),
    # Subjects of the decision API: the view refuses every other spelling with a 400 that
    # names the one spelling, before it reads anything (tests/integration/test_check_api.py
    # walks these spellings against a deny row).
    ("api.subject_roles", "subject"),
    ("api.subject_permissions", "subject"),
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def parameterized_rules(app: Flask) -> list[UrlRule]:
    """Every route of the app that takes a parameter from its path."""
    return [
        r
        for r in app.url_map.iter_rules()
        if r.arguments and not all((r.endpoint, a) in UNCONVERTED for a in r.arguments)
    ]


def canonical_value(rule: UrlRule, name: str) -> str:
    """The target a route's parameter names, by the parameter's converter."""
    converter = type(rule._converters[name])
    if converter is CONVERTERS["email"]:
        return TARGET
    if converter is CONVERTERS["role"]:
        return ROLE
    if converter is CONVERTERS["token"]:
        return ROLE  # a token of the same name
    if converter is CONVERTERS["rule_id"]:
        # Role assignments live under .../roles/<rule_id>, policy tests under
        # .../tests/<rule_id>; every other id names a rule.
        if "/tests/" in rule.rule:
            return TARGET_TEST.id
        return TARGET_LINK.id if "/roles/" in rule.rule else TARGET_RULE.id
    raise AssertionError(f"{rule.rule}: no canonical converter for <{name}>")


def url_for_rule(rule: UrlRule, values: dict[str, str]) -> str:
    """The path of ``rule`` with its parameters replaced by raw (already encoded) strings."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values[m.group(1)], rule.rule)


# -- spellings ------------------------------------------------------------------------


@dataclass(frozen=True)
class Spelling:
    """A way to write a value otherwise; ``None`` when it does not apply to a value."""

    name: str
    spell: Callable[[str], str | None]


def _replace(old: str, new: str) -> Callable[[str], str | None]:
    return lambda v: v.replace(old, new, 1) if old in v else None


def _fullwidth(v: str) -> str:
    return chr(ord(v[0]) + 0xFEE0) + v[1:]  # "k" -> "ｋ", "0" -> "０": NFKC folds them back


#: Spellings that name the canonical value to a normalizing view but are another string
#: to the policy. Values are URL text: "%20" is sent as is, Unicode is sent UTF-8 encoded.
OTHER_SPELLINGS = [
    Spelling("upper-case", lambda v: v.upper()),
    Spelling("capitalized", lambda v: v[0].upper() + v[1:]),
    Spelling(
        "encoded-upper-case",
        lambda v: f"%{ord(v[0].upper()):02X}{v[1:]}" if v[0].upper() != v[0] else None,
    ),
    Spelling("leading-space", lambda v: "%20" + v),
    Spelling("trailing-space", lambda v: v + "%20"),
    Spelling("no-break-space", lambda v: "%C2%A0" + v),  # str.strip() strips it
    Spelling("ideographic-space", lambda v: v + "\u3000"),
    Spelling("zero-width-space", lambda v: "\u200b" + v),
    Spelling("tab", lambda v: "%09" + v),
    Spelling("nul", lambda v: v + "%00"),
    Spelling("trailing-dot", lambda v: v + "."),
    Spelling("trailing-slash", lambda v: v + "/"),
    Spelling("encoded-trailing-slash", lambda v: v + "%2F"),
    Spelling("fullwidth", _fullwidth),
    Spelling("kelvin-sign", _replace("k", "\u212a")),  # "\u212a".lower() == "k"
    Spelling("dotted-capital-i", _replace("i", "\u0130")),  # lower() gives "i\u0307"
    Spelling("dotless-i", _replace("i", "\u0131")),
    Spelling("long-s", _replace("s", "\u017f")),  # "\u017f".upper() == "S"
    Spelling("fi-ligature", _replace("fi", "\ufb01")),
    Spelling("combining-accent", lambda v: v[0] + "\u0301" + v[1:]),
]
#: Spellings the URL decoding itself turns into the canonical value: the policy and the
#: view both see the decoded string, so these are the canonical request.
SAME_SPELLINGS = [
    Spelling("encoded-first-character", lambda v: f"%{ord(v[0]):02x}{v[1:]}"),
    Spelling("encoded-at-sign", _replace("@", "%40")),
]


# -- the app under attack -------------------------------------------------------------


def state(app: Flask) -> tuple[Any, ...]:
    """The policy, its revision, the audit log's length and the target account."""
    with app.app_context():
        engine = app.extensions["authz"]
        target = users.get(TARGET)
        assert target is not None
        return (
            engine.rules(),
            engine.revision,
            len(engine.store.audit_entries(limit=100_000)),
            target.active,
            target.session_token,
            target.password_hash,
            [u.email for u in users.list_users()],
        )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Flask]:
    """One app for the whole table: nothing in it may change, and each request checks so."""
    app = make_app(tmp_path_factory.mktemp("spellings"), backend=backend)
    with app.app_context():
        users.create(TARGET, "target-password-1", actor="test", source="cli")
        users.create(HELPDESK, HELPDESK_PASSWORD, actor="test", source="cli")
        engine = app.extensions["authz"]
        engine.apply(
            Change.adding(TARGET_RULE, Rule.of("g", HELPDESK, "helpdesk")),
            actor="test",
            source="cli",
        )
        engine.apply(Change.adding(TARGET_LINK), actor="test", source="cli")
        engine.change_expectations([TARGET_TEST], actor="test", source="cli", action="test.add")
        tokens.create(ROLE, actor="test", source="cli")
        # The helpdesk may do anything in the editor and the API, except on the target:
        # one deny row per route, naming the route's canonical path exactly.
        denied = [
            Rule.of("p", "helpdesk", url_for_rule(r, _canonical(r)), ".*", "deny")
            for r in parameterized_rules(app)
        ]
        engine.apply(
            Change.adding(
                Rule.of("p", "helpdesk", "/admin/*", ".*", "allow"),
                Rule.of("p", "helpdesk", "/api/v1/*", ".*", "allow"),
                *dict.fromkeys(denied),
            ),
            actor="test",
            source="cli",
        )
    yield app
    dispose(app)


def _canonical(rule: UrlRule) -> dict[str, str]:
    return {name: canonical_value(rule, name) for name in rule.arguments}


class Caller:
    """A logged-in browser that sends a valid CSRF token and a body that would act."""

    def __init__(self, app: Flask, email: str, password: str) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()
        assert AuthActions(self.client).login(email, password).status_code == 302
        self.token = self.client.get("/api/v1/csrf").json["csrf_token"]  # type: ignore[index]

    def send(self, method: str, path: str) -> TestResponse:
        with self.app.app_context():
            revision = self.app.extensions["authz"].revision
        headers = {"X-CSRFToken": self.token}
        if path.startswith("/api/"):
            body: dict[str, Any] = {
                "subject": ROLE,
                "path": "/changed",
                "methods": "GET",
                "revision": revision,
            }
            return self.client.open(
                path,
                method=method,
                headers=headers,
                json=body if method in ("PUT", "PATCH") else None,
                query_string={"revision": revision} if method == "DELETE" else None,
            )
        # Every field any editor form reads: a view that ran would have something to do.
        form = {
            "csrf_token": self.token,
            "revision": str(revision),
            "role": "admin",
            "subject": ROLE,
            "path": "/changed",
            "methods": "GET",
            "effect": "allow",
            "active": "0",
        }
        data = form if method != "GET" else None
        return self.client.open(path, method=method, headers=headers, data=data)


@pytest.fixture(scope="module")
def helpdesk(app: Flask) -> Caller:
    return Caller(app, HELPDESK, HELPDESK_PASSWORD)


@pytest.fixture(scope="module")
def admin(app: Flask) -> Caller:
    return Caller(app, ADMIN, ADMIN_PASSWORD)


def requests(app: Flask, spelling: Spelling) -> Iterator[tuple[str, str]]:
    """(method, path) of every route and method, with one parameter respelled."""
    for rule in parameterized_rules(app):
        canonical = _canonical(rule)
        for name, value in canonical.items():
            spelled = spelling.spell(value)
            if spelled is None or spelled == value:
                continue
            path = url_for_rule(rule, {**canonical, name: spelled})
            for method in sorted((rule.methods or set()) & set(METHODS)):
                yield method, path


def refused_by_middleware(response: TestResponse) -> bool:
    """A 400 from the path check that runs before any decision (not from a view)."""
    return response.status_code == 400 and "Refused request" in response.get_data(as_text=True)


# -- the table ------------------------------------------------------------------------


def test_every_path_parameter_has_a_canonical_converter(app: Flask) -> None:
    """A new route with a plain <name> fails here until its parameter gets a converter."""
    missing = [
        f"{rule.rule} <{name}>"
        for rule in app.url_map.iter_rules()
        for name in rule.arguments
        if (rule.endpoint, name) not in UNCONVERTED
        and type(rule._converters[name]) not in CONVERTERS.values()
    ]
    assert not missing, f"parameters without a canonical converter: {missing}"
    assert len(parameterized_rules(app)) >= 15  # the admin pages and the API are walked


def test_the_canonical_paths_are_denied_to_the_helpdesk_and_served_to_an_admin(
    app: Flask, helpdesk: Caller, admin: Caller
) -> None:
    """The baseline: the deny rows hold, and the targets exist (so a 404 below is a refusal)."""
    before = state(app)
    for rule in parameterized_rules(app):
        path = url_for_rule(rule, _canonical(rule))
        for method in sorted((rule.methods or set()) & set(METHODS)):
            assert helpdesk.send(method, path).status_code == 403, (method, path)
        if "GET" in (rule.methods or ()):
            assert admin.send("GET", path).status_code == 200, path
    assert state(app) == before


@pytest.mark.parametrize("spelling", OTHER_SPELLINGS, ids=lambda s: s.name)
def test_no_other_spelling_reaches_a_view(
    app: Flask, helpdesk: Caller, admin: Caller, spelling: Spelling
) -> None:
    """Denied (403), not found (404) or refused as a path (400); never served, nothing changed."""
    before = state(app)
    failures = []
    tried = 0
    for method, path in requests(app, spelling):
        tried += 1
        # The helpdesk is allowed the wildcard: unless the spelling is the denied path,
        # only the routing refusal stands between it and the target.
        mine = helpdesk.send(method, path)
        if mine.status_code not in (403, 404) and not refused_by_middleware(mine):
            failures.append(f"helpdesk {method} {path} -> {mine.status_code}")
        # An admin may do anything: a 404 here is the converter, not the policy.
        theirs = admin.send(method, path)
        if theirs.status_code != 404 and not refused_by_middleware(theirs):
            failures.append(f"admin {method} {path} -> {theirs.status_code}")
        if state(app) != before:
            failures.append(f"{method} {path} changed the target")
            break
    assert tried, "the spelling applies to no route"
    assert not failures, "\n".join(failures)
    assert state(app) == before


@pytest.mark.parametrize("spelling", SAME_SPELLINGS, ids=lambda s: s.name)
def test_percent_encoding_is_decoded_alike_for_the_policy_and_the_view(
    app: Flask, helpdesk: Caller, admin: Caller, spelling: Spelling
) -> None:
    """``%6bofi`` is ``kofi`` to both: the deny row applies, and the view sees ``kofi``."""
    before = state(app)
    tried = 0
    for method, path in requests(app, spelling):
        tried += 1
        assert helpdesk.send(method, path).status_code == 403, (method, path)
        if method == "GET":
            assert admin.send(method, path).status_code == 200, path
    assert tried
    assert state(app) == before
    shown = admin.send("GET", "/api/v1/users/" + spelling.spell(TARGET)).json  # type: ignore[operator]
    assert shown["user"]["email"] == TARGET  # type: ignore[index]


def test_a_non_canonical_spelling_is_a_not_found_problem_in_the_api(admin: Caller) -> None:
    response = admin.send("GET", "/api/v1/users/KOFI.BOSS@example.com")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == 404  # type: ignore[index]


def test_a_non_canonical_spelling_is_a_not_found_page_in_the_editor(admin: Caller) -> None:
    response = admin.send("GET", "/admin/users/KOFI.BOSS@example.com")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


# -- the report, step by step ---------------------------------------------------------


@pytest.fixture
def reported(tmp_path: Path) -> Iterator[Flask]:
    """The policy of issue 7, on a fresh app: helpdesk on /admin/users/*, the boss excepted."""
    app = make_app(tmp_path)
    with app.app_context():
        users.create("boss@example.com", "boss-password-1", actor="test", source="cli")
        users.create(HELPDESK, HELPDESK_PASSWORD, actor="test", source="cli")
        app.extensions["authz"].apply(
            Change.adding(
                Rule.of("g", HELPDESK, "helpdesk"),
                Rule.of("p", "helpdesk", "/admin/users/*", ".*", "allow"),
                Rule.of("p", "helpdesk", "/admin/users/*/active", ".*", "allow"),
                Rule.of("p", "helpdesk", "/api/v1/*", ".*", "allow"),
                Rule.of("p", "helpdesk", "/admin/users/boss@example.com", ".*", "deny"),
                Rule.of("p", "helpdesk", "/admin/users/boss@example.com/*", ".*", "deny"),
                Rule.of("p", "helpdesk", "/api/v1/users/boss@example.com", ".*", "deny"),
                Rule.of("p", "helpdesk", "/api/v1/users/boss@example.com/*", ".*", "deny"),
            ),
            actor="test",
            source="cli",
        )
    yield app
    dispose(app)


def boss_active(app: Flask) -> bool:
    with app.app_context():
        boss = users.get("boss@example.com")
        assert boss is not None
        return boss.active


@pytest.mark.parametrize(
    "spelling",
    ["BOSS@example.com", "%20boss@example.com", "Boss@Example.Com", "boss@example.com%20"],
)
def test_the_helpdesk_cannot_deactivate_the_boss_by_respelling_the_email(
    reported: Flask, spelling: str
) -> None:
    helpdesk = Caller(reported, HELPDESK, HELPDESK_PASSWORD)
    assert helpdesk.send("GET", "/admin/users/boss@example.com").status_code == 403
    assert helpdesk.send("GET", f"/admin/users/{spelling}").status_code == 404
    assert helpdesk.send("POST", f"/admin/users/{spelling}/active").status_code == 404
    assert helpdesk.send("GET", f"/api/v1/users/{spelling}").status_code == 404
    assert helpdesk.send("POST", f"/api/v1/users/{spelling}/deactivate").status_code == 404
    assert boss_active(reported)


def test_the_same_request_with_the_canonical_email_would_have_acted(reported: Flask) -> None:
    """The requests above were complete (CSRF token, form): only the spelling stopped them."""
    helpdesk = Caller(reported, HELPDESK, HELPDESK_PASSWORD)
    with reported.app_context():
        users.create("intern@example.com", "intern-password-1", actor="test", source="cli")
    response = helpdesk.send("POST", "/admin/users/intern@example.com/active")
    assert response.status_code == 302
    with reported.app_context():
        intern = users.get("intern@example.com")
        assert intern is not None and not intern.active
    assert helpdesk.send("POST", "/api/v1/users/intern@example.com/activate").status_code == 200
    assert boss_active(reported)


@pytest.mark.parametrize(
    "member",
    ["\u212aofi.boss@example.com", "kof\u0130.boss@example.com", "kofi.bo\u017fs@example.com"],
)
def test_a_role_assignment_names_the_account_exactly_as_stored(
    app: Flask, admin: Caller, member: str
) -> None:
    """A look-alike that str.lower() folds onto the account would make a row for nobody."""
    before = state(app)
    with app.app_context():
        revision = app.extensions["authz"].revision
    response = admin.client.post(
        "/api/v1/policy/roles",
        json={"member": member, "role": "admin", "revision": revision},
        headers={"X-CSRFToken": admin.token},
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["errors"][0]["field"] == "member"  # type: ignore[index]
    assert state(app) == before
