"""Decisions: the default policy's verdicts, the deciding rule, and the Decision value."""

from __future__ import annotations

import pytest

from authz.decision import Decision
from authz.decision import Reason
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.model import PolicyModel
from authz.paths import canonical_action
from authz.rules import Rule
from authz.store import PolicyStore

ALICE = "alice@example.com"


def p(sub: str, obj: str, act: str, eft: str = "allow") -> Rule:
    """Build a p row."""
    return Rule.of("p", sub, obj, act, eft)


#: (subject, object, action, allowed, the rule that decided or None)
DEFAULT_POLICY = [
    pytest.param(
        "anonymous", "/login", "GET", True, p("anonymous", "/login", "GET|POST"), id="anon-login"
    ),
    pytest.param(
        "anonymous",
        "/login",
        "POST",
        True,
        p("anonymous", "/login", "GET|POST"),
        id="anon-login-post",
    ),
    pytest.param("anonymous", "/login", "DELETE", False, None, id="anon-login-delete"),
    pytest.param("anonymous", "/", "GET", False, None, id="anon-home"),
    pytest.param(
        "anonymous",
        "/static/app.css",
        "GET",
        True,
        p("anonymous", "/static/*", "GET"),
        id="anon-static",
    ),
    pytest.param("anonymous", "/static/app.css", "POST", False, None, id="anon-static-post"),
    pytest.param("anonymous", "/static", "GET", False, None, id="anon-static-dir"),
    pytest.param(
        "anonymous",
        "/favicon.ico",
        "GET",
        True,
        p("anonymous", "/favicon.ico", "GET"),
        id="anon-favicon",
    ),
    pytest.param("anonymous", "/admin/", "GET", False, None, id="anon-admin"),
    pytest.param("user", "/", "GET", True, p("user", "/", "GET"), id="user-home"),
    pytest.param(
        "user", "/logout", "POST", True, p("user", "/logout", "GET|POST"), id="user-logout"
    ),
    pytest.param(
        "user",
        "/login",
        "GET",
        True,
        p("anonymous", "/login", "GET|POST"),
        id="user-inherits-anonymous",
    ),
    pytest.param("user", "/admin", "GET", False, None, id="user-admin"),
    pytest.param("user", "/admin/", "GET", False, None, id="user-admin-slash"),
    pytest.param("user", "/api/v1/policy", "GET", False, None, id="user-api"),
    pytest.param("admin", "/", "GET", True, p("user", "/", "GET"), id="admin-inherits-user"),
    pytest.param(
        "admin",
        "/login",
        "POST",
        True,
        p("anonymous", "/login", "GET|POST"),
        id="admin-inherits-two-hops",
    ),
    pytest.param("admin", "/admin", "GET", True, p("admin", "/admin", "GET"), id="admin-admin"),
    pytest.param("admin", "/admin", "POST", False, None, id="admin-admin-post"),
    pytest.param("admin", "/admin/", "GET", True, p("admin", "/admin/*", ".*"), id="admin-editor"),
    pytest.param(
        "admin",
        "/admin/users/7",
        "DELETE",
        True,
        p("admin", "/admin/*", ".*"),
        id="admin-any-method",
    ),
    pytest.param(
        "admin", "/api/v1/policy", "POST", True, p("admin", "/api/v1/*", ".*"), id="admin-api"
    ),
    pytest.param("admin", "/nowhere", "GET", False, None, id="admin-unknown-path"),
    pytest.param(ALICE, "/", "GET", False, None, id="role-less-user"),
]


@pytest.mark.parametrize(("sub", "obj", "act", "allowed", "rule"), DEFAULT_POLICY)
def test_default_policy(
    engine: PolicyEngine, sub: str, obj: str, act: str, allowed: bool, rule: Rule | None
) -> None:
    """The default policy decides as documented and names the rule that decided."""
    decision = engine.decide(sub, obj, act)
    assert decision.allowed is allowed
    assert decision.rule == rule
    assert decision.reason is (Reason.ALLOW_RULE if allowed else Reason.NO_MATCH)
    assert (decision.subject, decision.obj, decision.action) == (sub, obj, act)


def test_a_user_gets_the_rights_of_their_role(engine: PolicyEngine) -> None:
    """A g row makes a user inherit everything the role may do."""
    assert not engine.decide(ALICE, "/admin/", "GET").allowed
    engine.apply(Change.adding(Rule.of("g", ALICE, "admin")), actor="test", source="cli")
    assert engine.decide(ALICE, "/admin/", "GET").allowed
    assert engine.decide(ALICE, "/login", "GET").allowed
    assert engine.roles_for(ALICE) == ["admin", "anonymous", "user"]


@pytest.mark.parametrize("deny_first", [False, True], ids=["allow-then-deny", "deny-then-allow"])
def test_deny_overrides_allow_whatever_the_row_order(
    model: PolicyModel, store: PolicyStore, deny_first: bool
) -> None:
    """A matching deny row wins over a matching allow row, in either insertion order."""
    allow = p("admin", "/admin/*", ".*")
    deny = p("admin", "/admin/secret", "GET", "deny")
    engine = PolicyEngine(model, store)
    engine.load()
    rows = (deny, allow) if deny_first else (allow, deny)
    for row in rows:
        engine.apply(Change.adding(row), actor="test", source="cli")
    denied = engine.decide("admin", "/admin/secret", "GET")
    assert (denied.allowed, denied.reason, denied.rule) == (False, Reason.DENY_RULE, deny)
    other = engine.decide("admin", "/admin/other", "GET")
    assert (other.allowed, other.reason, other.rule) == (True, Reason.ALLOW_RULE, allow)
    post = engine.decide("admin", "/admin/secret", "POST")
    assert (post.allowed, post.rule) == (True, allow)


def test_deny_on_a_base_role_binds_every_role_above_it(engine: PolicyEngine) -> None:
    """A deny for anonymous also denies users and admins, who inherit from anonymous."""
    deny = p("anonymous", "/static/private/*", ".*", "deny")
    engine.apply(Change.adding(deny), actor="test", source="cli")
    for sub in ("anonymous", "user", "admin"):
        decision = engine.decide(sub, "/static/private/key.pem", "GET")
        assert (decision.allowed, decision.reason, decision.rule) == (False, Reason.DENY_RULE, deny)
    assert engine.decide("anonymous", "/static/app.css", "GET").allowed


@pytest.mark.parametrize(
    ("obj", "act", "allowed"),
    [
        ("/users/42", "GET", True),
        ("/users/42", "POST", True),
        ("/users/42", "DELETE", False),
        ("/users/42/edit", "GET", False),
        ("/users/", "GET", False),
        ("/users", "GET", False),
        ("/users/42/edit/more", "GET", False),
    ],
)
def test_key_match2_named_segment_and_method_regex(
    engine: PolicyEngine, obj: str, act: str, allowed: bool
) -> None:
    """`/users/:id` matches exactly one segment; `GET|POST` matches those methods only."""
    rule = p("user", "/users/:id", "GET|POST")
    engine.apply(Change.adding(rule), actor="test", source="cli")
    decision = engine.decide("user", obj, act)
    assert decision.allowed is allowed
    assert decision.rule == (rule if allowed else None)


def test_head_is_decided_as_get(engine: PolicyEngine) -> None:
    """HEAD goes through canonical_action and is granted exactly when GET is."""
    assert not engine.decide("anonymous", "/static/app.css", "HEAD").allowed  # raw HEAD: no row
    decision = engine.decide("anonymous", "/static/app.css", canonical_action("HEAD"))
    assert decision.allowed
    assert decision.action == "GET"
    assert not engine.decide("anonymous", "/", canonical_action("HEAD")).allowed


@pytest.mark.parametrize(
    ("sub", "obj", "act", "text"),
    [
        ("admin", "/", "GET", "allow: admin GET / is allowed by rule [p, user, /, GET, allow]"),
        ("anonymous", "/", "GET", "deny: anonymous GET / matches no allow rule"),
        (
            "user",
            "/static/private/x",
            "GET",
            "deny: user GET /static/private/x is denied by rule "
            "[p, anonymous, /static/private/*, .*, deny]",
        ),
    ],
)
def test_explain_names_the_deciding_rule(
    engine: PolicyEngine, sub: str, obj: str, act: str, text: str
) -> None:
    """engine.explain is the one-line explanation the admin UI and the API show."""
    engine.apply(
        Change.adding(p("anonymous", "/static/private/*", ".*", "deny")), actor="t", source="cli"
    )
    assert engine.explain(sub, obj, act) == text


@pytest.mark.parametrize(
    ("decision", "text"),
    [
        (
            Decision(True, Reason.ALLOW_RULE, "user", "/", "GET", p("user", "/", "GET")),
            "allow: user GET / is allowed by rule [p, user, /, GET, allow]",
        ),
        (
            Decision(False, Reason.DENY_RULE, "user", "/x", "POST", p("user", "/x", ".*", "deny")),
            "deny: user POST /x is denied by rule [p, user, /x, .*, deny]",
        ),
        (
            Decision(False, Reason.NO_MATCH, "anonymous", "/", "GET"),
            "deny: anonymous GET / matches no allow rule",
        ),
    ],
)
def test_decision_explain(decision: Decision, text: str) -> None:
    """Decision.explain says the verdict, the request and the rule."""
    assert decision.explain() == text


def test_decision_as_dict() -> None:
    """as_dict is JSON-ready: plain strings and lists, the explanation included."""
    rule = p("user", "/", "GET")
    decision = Decision(True, Reason.ALLOW_RULE, "user", "/", "GET", rule)
    assert decision.as_dict() == {
        "allowed": True,
        "reason": "allow-rule",
        "subject": "user",
        "object": "/",
        "action": "GET",
        "rule": ["p", "user", "/", "GET", "allow"],
        "explain": "allow: user GET / is allowed by rule [p, user, /, GET, allow]",
    }
    assert Decision(False, Reason.NO_MATCH, "a", "/", "GET").as_dict()["rule"] is None


def test_reason_values_are_a_closed_vocabulary() -> None:
    """The machine-readable reasons the API publishes."""
    assert [str(r) for r in Reason] == ["allow-rule", "deny-rule", "no-match"]
