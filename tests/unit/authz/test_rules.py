"""authz.rules: validation of policy rows against the shipped model, and normalization."""

from __future__ import annotations

import re

import pytest
from casbin.util import key_match2

from authz.errors import RuleError
from authz.model import PolicyModel
from authz.patterns import to_regex
from authz.rules import MAX_VALUE_LENGTH
from authz.rules import Rule
from authz.rules import is_role
from authz.rules import is_user
from authz.rules import normalize
from authz.rules import validate
from authz.rules import validate_all

#: (ptype, values, field named by the error, fragment of its message)
INVALID = [
    pytest.param("q", ("user", "/", "GET", "allow"), None, "unknown rule type", id="unknown-ptype"),
    pytest.param("g2", ("alice@example.com", "admin"), None, "unknown rule type", id="ptype-g2"),
    pytest.param("p", ("user", "/"), None, "4 values", id="p-two-values"),
    pytest.param("p", ("user",), None, "4 values", id="p-one-value"),
    pytest.param("p", ("user", "/", "GET", "allow", "x"), None, "4 values", id="p-five-values"),
    pytest.param("g", ("user",), None, "2 values", id="g-one-value"),
    pytest.param("g", ("alice@example.com", "admin", "x"), None, "2 values", id="g-three-values"),
    pytest.param("p", ("", "/", "GET", "allow"), "sub", "is empty", id="empty-sub"),
    pytest.param("p", ("user", "", "GET", "allow"), "obj", "is empty", id="empty-obj"),
    pytest.param("p", ("user", "/", "", "allow"), "act", "is empty", id="empty-act"),
    pytest.param("p", ("user", "/", "GET", ""), "eft", "is empty", id="empty-eft"),
    pytest.param("p", (" user", "/", "GET", "allow"), "sub", "spaces", id="leading-space"),
    pytest.param("p", ("user", "/admin ", "GET", "allow"), "obj", "spaces", id="trailing-space"),
    pytest.param("p", ("user", "/", "GET\t", "allow"), "act", "spaces", id="trailing-tab"),
    pytest.param("p", ("user", "/a\x00b", "GET", "allow"), "obj", "control", id="nul"),
    pytest.param("p", ("us\ner", "/", "GET", "allow"), "sub", "control", id="newline"),
    pytest.param("p", ("user", "/", "GE\x1fT", "allow"), "act", "control", id="unit-separator"),
    pytest.param("p", ("user", "/a\x7f", "GET", "allow"), "obj", "control", id="del"),
    pytest.param(
        "p",
        ("user", "/" + "a" * MAX_VALUE_LENGTH, "GET", "allow"),
        "obj",
        "longer than 255",
        id="256-chars",
    ),
    pytest.param("p", ("user", "/", "GET", "permit"), "eft", "allow or deny", id="bad-effect"),
    pytest.param("p", ("user", "/", "GET", "Allow"), "eft", "allow or deny", id="effect-case"),
    pytest.param("p", ("user", "admin/*", "GET", "allow"), "obj", "start with '/'", id="relative"),
    pytest.param("p", ("user", "", "GET", "allow"), "obj", "is empty", id="no-path"),
    pytest.param("p", ("user", "/a/(", "GET", "allow"), "obj", "does not compile", id="km2-paren"),
    pytest.param("p", ("user", "/a/[x", "GET", "allow"), "obj", "does not compile", id="km2-class"),
    pytest.param("p", ("user", "/", "GET|(", "allow"), "act", "does not compile", id="act-paren"),
    pytest.param("p", ("user", "/", "*GET", "allow"), "act", "does not compile", id="act-star"),
    pytest.param("p", ("Admin", "/", "GET", "allow"), "sub", "neither", id="sub-upper"),
    pytest.param("p", ("1admin", "/", "GET", "allow"), "sub", "neither", id="sub-digit"),
    pytest.param("p", ("-admin", "/", "GET", "allow"), "sub", "neither", id="sub-dash"),
    pytest.param(
        "p",
        ("Bob@Example.com", "/", "GET", "allow"),
        "sub",
        "write it as bob@example.com",
        id="email-case",
    ),
    pytest.param("p", ("bad name", "/", "GET", "allow"), "sub", "neither", id="sub-space"),
    pytest.param("g", ("alice@example.com", "Admin"), "role", "not a role name", id="role-upper"),
    pytest.param("g", ("alice@example.com", "ad@min"), "role", "not a role name", id="role-at"),
    pytest.param("g", ("alice@example.com", "2nd"), "role", "not a role name", id="role-digit"),
    pytest.param("g", ("Admin", "user"), "member", "neither", id="member-upper"),
    pytest.param("g", ("9lives", "user"), "member", "neither", id="member-digit"),
    pytest.param(
        "g", ("admin", "alice@example.com"), "role", "users cannot be inherited", id="g-to-user"
    ),
    pytest.param("g", ("admin", "admin"), "role", "itself", id="self-inheritance"),
    pytest.param("g", ("token:CI", "user"), "member", "neither", id="token-upper"),
    pytest.param("g", ("token:", "user"), "member", "neither", id="token-no-name"),
    pytest.param("g", ("token:a b", "user"), "member", "neither", id="token-space"),
    pytest.param("g", ("token:" + "a" * 64, "user"), "member", "neither", id="token-too-long"),
    pytest.param("g", ("user", "token:ci"), "role", "not a role name", id="token-as-role"),
]

VALID = [
    pytest.param(Rule.of("p", "user", "/", "GET", "allow"), id="plain"),
    pytest.param(Rule.of("p", "anonymous", "/static/*", "GET", "allow"), id="wildcard"),
    pytest.param(Rule.of("p", "admin", "/admin/*", ".*", "deny"), id="deny-any-method"),
    pytest.param(Rule.of("p", "user", "/users/:id", "GET|POST", "allow"), id="named-segment"),
    pytest.param(Rule.of("p", "alice@example.com", "/me", "GET", "allow"), id="user-subject"),
    pytest.param(Rule.of("p", "user", "*", "GET", "allow"), id="star-object"),
    pytest.param(Rule.of("p", "user", "/a,b", "GET", "allow"), id="comma-in-value"),
    pytest.param(Rule.of("p", "ops-team_2", "/ops", "(GET|POST)", "allow"), id="role-chars"),
    pytest.param(
        Rule.of("p", "user", "/" + "a" * (MAX_VALUE_LENGTH - 1), "GET", "allow"), id="255-chars"
    ),
    pytest.param(Rule.of("g", "alice@example.com", "admin"), id="user-in-role"),
    pytest.param(Rule.of("g", "admin", "user"), id="role-in-role"),
    pytest.param(Rule.of("g", "user", "anonymous"), id="role-in-anonymous"),
    pytest.param(Rule.of("g", "token:ci-bot_2", "checker"), id="token-in-role"),
    pytest.param(Rule.of("p", "token:ci", "/api/v1/check", "POST", "allow"), id="token-subject"),
]


@pytest.mark.parametrize(("ptype", "values", "field", "message"), INVALID)
def test_validate_refuses(
    model: PolicyModel, ptype: str, values: tuple[str, ...], field: str | None, message: str
) -> None:
    """Each invalid row raises RuleError naming the bad field and the line it came from."""
    with pytest.raises(RuleError) as info:
        validate(Rule(ptype, values), model, line=7)
    assert info.value.field == field
    assert info.value.line == 7
    assert message in info.value.message
    assert str(info.value).startswith(f"line 7: {field}: " if field else "line 7: ")


def test_error_without_line_has_no_line(model: PolicyModel) -> None:
    """A rule validated outside a file carries line None and no 'line' prefix."""
    with pytest.raises(RuleError) as info:
        validate(Rule.of("p", "user", "/", "GET", "maybe"), model)
    assert info.value.line is None
    assert str(info.value).startswith("eft: ")


@pytest.mark.parametrize("rule", VALID)
def test_validate_accepts(model: PolicyModel, rule: Rule) -> None:
    """Legal rows come back unchanged."""
    assert validate(rule, model) == rule


def test_three_value_p_row_means_allow(model: PolicyModel) -> None:
    """A p row without its effect is normalized to eft 'allow'."""
    rule = validate(Rule.of("p", "user", "/", "GET"), model)
    assert rule == Rule.of("p", "user", "/", "GET", "allow")


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(Rule.of("p", "user", "/", "GET", "deny"), id="complete-p"),
        pytest.param(Rule.of("g", "admin", "user"), id="g-row"),
        pytest.param(Rule.of("p", "user", "/"), id="too-short-for-an-effect"),
        pytest.param(Rule.of("q", "user", "/", "GET"), id="unknown-ptype"),
    ],
)
def test_normalize_leaves_other_rows_alone(model: PolicyModel, rule: Rule) -> None:
    """Only a p row missing exactly its effect gets one."""
    assert normalize(rule, model) == rule


def test_validate_all_normalizes_and_stops_at_the_first_error(model: PolicyModel) -> None:
    """validate_all returns normalized rows, or raises for the first bad one."""
    good = [Rule.of("p", "user", "/", "GET"), Rule.of("g", "admin", "user")]
    assert validate_all(good, model) == [
        Rule.of("p", "user", "/", "GET", "allow"),
        Rule.of("g", "admin", "user"),
    ]
    with pytest.raises(RuleError) as info:
        validate_all([*good, Rule.of("g", "admin", "admin"), Rule.of("x", "a")], model)
    assert info.value.field == "role"


@pytest.mark.parametrize(
    ("name", "role", "user"),
    [
        ("admin", True, False),
        ("ops-team_2", True, False),
        ("anonymous", True, False),
        ("alice@example.com", False, True),
        ("Alice@example.com", False, False),
        ("Admin", False, False),
        ("2admin", False, False),
        ("", False, False),
        ("a b@example.com", False, False),
    ],
)
def test_role_and_user_names(name: str, role: bool, user: bool) -> None:
    """Role names and user subjects never overlap."""
    assert is_role(name) is role
    assert is_user(name) is user


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/admin/*", "/admin/"),
        ("/admin/*", "/admin/users/7"),
        ("/admin/*", "/admin"),
        ("/users/:id", "/users/42"),
        ("/users/:id", "/users/42/edit"),
        ("/users/:id/edit", "/users/42/edit"),
        ("/users/:id", "/users/"),
        ("*", "/anything/at/all"),
        ("/", "/"),
        ("/", "/x"),
    ],
)
def test_key_match2_regex_is_what_casbin_evaluates(pattern: str, path: str) -> None:
    """The regex the validator compiles decides exactly like Casbin's keyMatch2."""
    assert (re.match(to_regex("keyMatch2", pattern), path) is not None) is key_match2(path, pattern)


def test_rule_as_list_and_str() -> None:
    """A rule prints as its CSV line and knows whether it is a role link."""
    rule = Rule.of("p", "user", "/", "GET", "allow")
    assert rule.as_list() == ["p", "user", "/", "GET", "allow"]
    assert str(rule) == "p, user, /, GET, allow"
    assert not rule.is_role_link
    assert Rule.of("g", "admin", "user").is_role_link
