"""authz.risks: which valid rows grant more than an admin probably meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.model import PolicyModel
from authz.risks import NO_ACCOUNT
from authz.risks import NO_TOKEN
from authz.risks import compared_fields
from authz.risks import matches_every_method
from authz.risks import matches_every_path
from authz.risks import risks
from authz.rules import Rule
from authz.snapshot import Snapshot


def p(sub: str, obj: str, act: str, eft: str = "allow") -> Rule:
    return Rule.of("p", sub, obj, act, eft)


@pytest.mark.parametrize(
    ("pattern", "every"),
    [
        (".*", True),
        ("GET|", True),  # the empty alternative matches the start of any method
        ("|GET", True),
        ("GET|.*", True),
        ("(GET)?", True),
        ("[A-Z]", True),  # re.match needs only the first letter
        ("", True),
        ("GET", False),
        ("GET|POST", False),
        ("^GET$", False),
        ("(GET|POST|PUT|PATCH|DELETE)", False),
    ],
)
def test_methods_patterns_that_match_every_method(pattern: str, every: bool) -> None:
    assert matches_every_method("regexMatch", pattern) is every


@pytest.mark.parametrize(
    ("pattern", "every"),
    [
        ("*", True),
        ("/*", True),
        ("/:a", False),  # one segment only
        ("/admin/*", False),
        ("/", False),
        ("/:a/*", False),  # not "/" itself
    ],
)
def test_path_patterns_that_match_every_path(pattern: str, every: bool) -> None:
    assert matches_every_path("keyMatch2", pattern) is every


def test_a_broken_pattern_is_not_reported_as_broad() -> None:
    """A pattern the engine cannot evaluate grants nothing; it is the validator's business."""
    assert not matches_every_method("regexMatch", "(")
    assert not matches_every_path("keyMatch2", "/(")


def test_narrow_rows_have_no_risks(model: PolicyModel) -> None:
    assert risks(p("user", "/reports/*", "GET|POST"), model) == []
    assert risks(Rule.of("g", "admin", "user"), model) == []


def test_a_broad_allow_row_is_named(model: PolicyModel) -> None:
    found = risks(p("user", "/*", "GET|"), model)
    assert any("'/*' matches every path" in w for w in found)
    assert any("'GET|' matches every method" in w and "empty string" in w for w in found)


def test_a_broad_deny_row_is_no_risk(model: PolicyModel) -> None:
    """A deny row takes access away; it never grants too much."""
    assert risks(p("anonymous", "/*", ".*", "deny"), model) == []


def test_anonymous_everything_is_called_out(model: PolicyModel) -> None:
    found = risks(p("anonymous", "*", ".*"), model)
    assert "this allow rule gives anonymous visitors every request, without logging in" in found


def test_a_role_anonymous_inherits_counts_as_anonymous(model: PolicyModel) -> None:
    snapshot = Snapshot.of(1, [Rule.of("g", "anonymous", "guest")], model)
    found = risks(p("guest", "/reports/*", ".*"), snapshot)
    assert any("anonymous visitors (they inherit 'guest')" in w for w in found)
    # With the model alone nothing says anonymous holds "guest".
    assert not any("anonymous" in w for w in risks(p("guest", "/reports/*", ".*"), model))


def test_giving_anonymous_a_role_is_called_out(model: PolicyModel) -> None:
    found = risks(Rule.of("g", "anonymous", "admin"), model)
    assert found == [
        "anonymous visitors (anyone, without logging in) get role 'admin' and every rule it holds"
    ]


@pytest.mark.parametrize(
    "rule", [p("dave@example.com", "/", "GET"), Rule.of("g", "dave@example.com", "admin")], ids=str
)
def test_an_email_with_no_account_is_named(model: PolicyModel, rule: Rule) -> None:
    accounts = {"alice@example.com"}
    assert risks(rule, model, has_account=accounts.__contains__) == [
        f"dave@example.com: {NO_ACCOUNT}"
    ]
    accounts.add("dave@example.com")
    assert risks(rule, model, has_account=accounts.__contains__) == []
    assert risks(rule, model) == []  # without an account lookup, emails are not checked


def test_other_models_are_probed_with_their_own_functions(data_dir: Path) -> None:
    """A model whose path field is a regex: the probe uses regexMatch, as the engine does."""
    model = PolicyModel.from_file(data_dir / "models" / "rbac_regex_object.conf")
    assert compared_fields(model)["obj"] == ("regexMatch", "obj")
    assert compared_fields(model)["act"] == ("eq", "act")
    values = ["user", ".*", "GET", "allow"][: len(model.policies["p"])]
    assert any("matches every path" in w for w in risks(Rule("p", tuple(values)), model))
    # As a regex under re.match, "/*" (zero or more "/") matches the start of anything:
    # the engine grants every path, and so the warning says.
    values[1] = "/*"
    assert any("'/*' matches every path" in w for w in risks(Rule("p", tuple(values)), model))
    values[1] = "/admin/.*"
    assert risks(Rule("p", tuple(values)), model) == []


def test_a_path_pattern_that_does_not_match_its_own_text_is_flagged() -> None:
    """keyMatch2 reads '+' as a repeat: a deny row for a plus-address would deny another page."""
    from pathlib import Path as _Path

    from authz.model import PolicyModel as _Model

    model = _Model.from_file(_Path(__file__).resolve().parents[3] / "model.conf")
    plus = Rule.of("p", "helpdesk", "/admin/users/a+tag@example.com", ".*", "deny")
    found = risks(plus, model)
    assert any("does not match the path" in w for w in found), found
    escaped = Rule.of("p", "helpdesk", "/admin/users/a\\+tag@example.com", ".*", "deny")
    assert not any("does not match" in w for w in risks(escaped, model))
    plain = Rule.of("p", "helpdesk", "/admin/users/:email/roles/*", "GET", "allow")
    assert not any("does not match" in w for w in risks(plain, model))


@pytest.mark.parametrize(
    ("obj", "act"),
    [
        ("/[^%]*", "[^Q]"),  # dodges the probes "/%7E" and "QZX-UNKNOWN"
        ("/[^\\x25]*", "[^\\x51]"),  # the same, and matches its own text: no warning at all
        ("/.+", "[A-P]|[R-Z]"),  # every path but the root, every method but Q...
        ("/[^q]*", "[^QZX0-]+$"),
    ],
)
def test_probe_dodging_rows_for_anonymous_are_called_out(
    model: PolicyModel, obj: str, act: str
) -> None:
    """A row built to miss the fixed probes still grants anonymous visitors nearly every
    request (every page of the app, every method its views act on): it is warned about."""
    found = risks(p("anonymous", obj, act), model)
    assert any("every path" in w for w in found), found
    assert any("matches every method" in w for w in found), found
    assert any("anonymous visitors every request" in w for w in found), found


@pytest.mark.parametrize(
    "pattern",
    ["/admin/*", "/users/:id", "/:a/*", "/:a/:b", "/files/*/:name", "/*/settings", "/api/*"],
)
def test_everyday_paths_are_not_nearly_every_path(model: PolicyModel, pattern: str) -> None:
    assert not any("every path" in w for w in risks(p("user", pattern, "GET"), model))


@pytest.mark.parametrize(
    ("pattern", "every"),
    [
        ("[^Q]", True),
        ("[^Q]+$", True),
        ("GET|POS|PUT|PAT|DEL", True),  # prefixes: POSTAL, PUTX, DELAY too
        ("[GPD]", True),
        ("^(GET|HEAD|POST|PUT|PATCH|DELETE)$", False),
        ("GET|POST|PUT", False),
    ],
)
def test_methods_patterns_that_exclude_a_few_match_every_method(pattern: str, every: bool) -> None:
    assert matches_every_method("regexMatch", pattern) is every


@pytest.mark.parametrize(
    "rule", [p("token:ci", "/api/v1/check", "POST"), Rule.of("g", "token:ci", "checker")], ids=str
)
def test_a_token_that_does_not_exist_is_named(model: PolicyModel, rule: Rule) -> None:
    live = {"token:other"}
    assert risks(rule, model, has_account=live.__contains__) == [f"token:ci: {NO_TOKEN}"]
    live.add("token:ci")
    assert risks(rule, model, has_account=live.__contains__) == []
