"""The what-if comparison: who gains and loses which request, which policy tests flip."""

from __future__ import annotations

import pytest

from authz import whatif
from authz.expectations import expectation
from authz.model import PolicyModel
from authz.rules import Rule
from authz.snapshot import Snapshot
from authz.whatif import Target
from authz.whatif import compare
from authz.whatif import pattern_sample
from authz.whatif import route_target

REPORTS = route_target("/reports/<int:report_id>", {"GET", "POST", "HEAD", "OPTIONS"})
ADMIN = route_target("/admin/", {"GET", "HEAD"})


@pytest.fixture
def before(model: PolicyModel, default_rules: tuple[Rule, ...]) -> Snapshot:
    rows = (
        *default_rules,
        Rule.of("g", "alice@example.com", "admin"),
        Rule.of("g", "bob@example.com", "user"),
    )
    return Snapshot.of(1, rows, model)


def diff(
    before: Snapshot, added: tuple[Rule, ...] = (), removed: tuple[Rule, ...] = (), **kw: object
) -> whatif.WhatIf:
    after = before.with_changes(before.revision + 1, added, removed)
    routes = [t for t in (REPORTS, ADMIN) if t is not None]
    return compare(before, after, added=added, removed=removed, routes=routes, **kw)  # type: ignore[arg-type]


def test_a_route_is_shown_with_its_parameters_and_decided_on_a_sample() -> None:
    assert REPORTS == Target("/reports/:report_id", "/reports/1", ("GET", "POST"))
    assert route_target("/files/<path:name>", {"GET"}) == Target(
        "/files/:name", "/files/x", ("GET",)
    )
    assert route_target("/x", {"HEAD", "OPTIONS"}) is None


@pytest.mark.parametrize(
    ("kind", "pattern", "sample"),
    [
        ("keyMatch2", "/reports/:id", "/reports/x"),
        ("keyMatch2", "/static/*", "/static/x"),
        ("keyMatch", "/a/*", "/a/x"),
        ("keyMatch3", "/a/{id}/b", "/a/x/b"),
        ("eq", "/exact", "/exact"),
        ("regexMatch", "^/a/.*$", None),
        ("regexMatch", "/plain", "/plain"),
        ("keyMatch2", "//double", None),
    ],
)
def test_a_pattern_stands_for_a_path_it_accepts(
    kind: str, pattern: str, sample: str | None
) -> None:
    assert pattern_sample(kind, pattern) == sample


def test_a_role_gaining_a_route_is_one_line_for_all_its_members(before: Snapshot) -> None:
    result = diff(before, (Rule.of("p", "user", "/reports/:id", "POST", "allow"),))
    lines = [str(line) for line in result.lines]
    assert "+ user may now POST /reports/:report_id" in lines
    assert "+ admin may now POST /reports/:report_id" in lines  # admin inherits user
    assert "+ user may now POST /reports/:id" in lines  # the policy's own pattern
    # bob holds user, alice admin: their gain is the role's line, not one of their own.
    assert not [line for line in lines if "@" in line]
    assert not [line for line in lines if "GET /reports" in line]
    assert all(line.startswith("+") for line in lines)


def test_a_user_losing_a_role_is_listed_by_name(before: Snapshot) -> None:
    result = diff(before, removed=(Rule.of("g", "alice@example.com", "admin"),))
    lines = [str(line) for line in result.lines]
    assert "- alice@example.com may no longer GET /admin/" in lines
    assert not [line for line in lines if line.startswith("+")]
    assert not [line for line in lines if line.startswith("- admin")]


def test_inactive_users_are_left_out(before: Snapshot) -> None:
    result = diff(
        before, removed=(Rule.of("g", "alice@example.com", "admin"),), active=lambda users: []
    )
    assert not [line for line in result.lines if "alice" in line.subject]


def test_a_deny_row_shows_the_loss(before: Snapshot) -> None:
    result = diff(before, (Rule.of("p", "bob@example.com", "/account/*", "POST", "deny"),))
    assert [str(line) for line in result.lines] == [
        "- bob@example.com may no longer POST /account/*"
    ]


def test_flipped_tests_are_listed_both_ways(before: Snapshot) -> None:
    private = expectation("anonymous", "GET", "/admin/", "deny")
    wanted = expectation("user", "POST", "/reports/1", "allow")
    result = diff(
        before,
        (
            Rule.of("p", "anonymous", "/admin/*", "GET", "allow"),
            Rule.of("p", "user", "/reports/:id", "POST", "allow"),
        ),
        expectations=[private, wanted, expectation("user", "GET", "/", "allow")],
    )
    flips = {f.expectation: f for f in result.flips}
    assert set(flips) == {private, wanted}
    assert flips[private].breaks and not flips[wanted].breaks
    assert str(flips[private]) == (
        "breaks: anonymous may not GET /admin/: "
        "allowed by rule [p, anonymous, /admin/*, GET, allow]"
    )
    assert "+ anonymous may now GET /admin/" in [str(line) for line in result.lines]


def test_no_change_compares_nothing(before: Snapshot) -> None:
    result = diff(before)
    assert not result.changed and result.lines == () and result.flips == ()


def test_the_text_and_json_forms_agree(before: Snapshot) -> None:
    result = diff(before, (Rule.of("p", "user", "/reports/:id", "POST", "allow"),), refused="no")
    text = result.text()
    data = result.as_dict()
    assert text[0] == "1 row(s) added, 0 removed"
    assert [a["text"] for a in data["access"]] == [str(line) for line in result.lines]  # type: ignore[index]
    assert text[-1] == "Refused: no" and data["refused"] == "no"


def test_a_large_policy_compares_only_the_patterns_the_change_names(
    model: PolicyModel, default_rules: tuple[Rule, ...]
) -> None:
    many = [
        Rule.of("p", f"team{i}", f"/t{i}/*", "GET", "allow")
        for i in range(whatif.MAX_PATTERNS + 10)
    ]
    before = Snapshot.of(1, (*default_rules, *many), model)
    added = (Rule.of("p", "user", "/reports/:id", "POST", "allow"),)
    result = diff(before, added)
    assert result.compared["paths"] <= 3  # the change's pattern and the two routes
    assert any("path patterns" in limit for limit in result.limits)
    assert "+ user may now POST /reports/:id" in [str(line) for line in result.lines]


def test_the_decisions_made_are_bounded(
    model: PolicyModel, default_rules: tuple[Rule, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(whatif, "MAX_DECISIONS", 40)
    before = Snapshot.of(1, default_rules, model)
    result = diff(before, (Rule.of("p", "user", "/reports/:id", "POST", "allow"),))
    assert any("paths not compared" in limit for limit in result.limits)
    # Each path compared has a method at least: paths x subjects stays within the budget.
    assert 0 < result.compared["paths"] * result.compared["roles"] <= 20


def test_a_subject_with_many_lines_is_summarised(before: Snapshot) -> None:
    """Taking a user's only role takes many requests: a few are shown, the rest counted."""
    result = diff(before, removed=(Rule.of("g", "bob@example.com", "user"),))
    bob = [line for line in result.lines if line.subject == "bob@example.com"]
    assert len(bob) > whatif.PER_SUBJECT
    summary = [str(item) for item in result.summary()]
    shown = [line for line in summary if "bob@example.com" in line]
    assert len(shown) == whatif.PER_SUBJECT + 1
    assert (
        shown[-1]
        == f"- bob@example.com may no longer {len(bob) - whatif.PER_SUBJECT} more request(s)"
    )
    assert result.text()[-1] == f"  {shown[-1]}"


def test_a_change_reaches_the_subjects_that_inherit_what_it_names(before: Snapshot) -> None:
    """The gate decides only the tests of subjects a change can reach: those its rows name
    and those inheriting them, before or after; asked upward, per subject."""
    rows = (Rule.of("p", "user", "/reports/:id", "POST", "allow"),)
    after = before.with_changes(2, rows, ())
    reached = whatif.reached_by(before, after, rows)
    assert reached is not None
    assert reached("user") and reached("admin") and reached("bob@example.com")
    assert reached("alice@example.com")  # admin inherits user
    assert not reached("anonymous")  # user inherits anonymous, not the other way
    assert not reached("carol@example.com") and not reached("token:ci")
    link = (Rule.of("g", "carol@example.com", "admin"),)
    linked = before.with_changes(2, link, ())
    assert whatif.reached_by(before, linked, link)("carol@example.com")  # type: ignore[misc]
    assert not whatif.reached_by(before, linked, link)("admin")  # type: ignore[misc]


def test_a_refused_policy_reaches_every_subject(model: PolicyModel) -> None:
    rows = [
        Rule.of("p", "user", "/x", "GET", "allow"),
        Rule.of("p", "anonymous", "/x", "GET", "Deny"),
    ]
    refused = Snapshot.stored(3, rows, [1, 2], model)
    fixed = Snapshot.of(4, rows[:1], model)
    reached = whatif.reached_by(refused, fixed, (rows[1],))
    assert reached is not None and reached("someone@example.com")
