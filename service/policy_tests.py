"""Policy tests and the what-if view: the one layer behind the editor, the API and the CLI.

A policy test (:mod:`authz.expectations`) promises the outcome of one request; the engine
checks every stored one on each write. This module lists, adds, removes, loads and
exports them through the engine's audited write path, runs them, turns a tried request
into one, and compares a planned change's snapshot with the current one over the app's
route table and the policy's path patterns (:mod:`authz.whatif`).
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flask import current_app

from authz import Change
from authz import expectations as tests
from authz.csvio import read_file as read_policy_file
from authz.expectations import Expectation
from authz.expectations import ExpectationsBroken
from authz.expectations import Result
from authz.snapshot import Snapshot
from authz.whatif import Target
from authz.whatif import WhatIf
from authz.whatif import compare
from authz.whatif import route_target
from authz.whatif import unique_targets
from service import editing
from service import params
from service import users

__all__ = ["Expectation", "ExpectationsBroken", "Result"]


def parse(subject: str, method: str, path: str, outcome: str, note: str = "") -> Expectation:
    """An expectation from user input (RuleError names the bad field)."""
    return tests.expectation(subject, method, path, outcome, note)


def stored() -> list[Expectation]:
    """Every stored policy test, in the order they were added."""
    return users.engine().expectations()


def find(test_id: str) -> Expectation:
    """The stored policy test with this id (one that does not read too, as stored, so it
    can be removed), or Missing."""
    engine = users.engine()
    good, bad = engine.stored_expectations()
    for item in [*good, *(r.expectation for r in bad)]:
        if item.id == test_id:
            return item
    raise editing.Missing(f"no policy test with id {test_id!r}")


@dataclass(frozen=True)
class Page:
    """One page of policy tests, each with its result on the current policy."""

    results: list[Result]
    total: int
    page: int
    per_page: int
    failing: int
    #: Stored tests that do not read (edited by hand), one line each.
    bad: list[str]

    @property
    def pages(self) -> int:
        """How many pages the listing has (at least one)."""
        return max(1, -(-self.total // self.per_page))


def listing(
    *,
    q: str = "",
    failing: bool = False,
    page: int = 1,
    per_page: int = params.DEFAULT_PER_PAGE,
    clamp: bool = False,
) -> Page:
    """A page of policy tests and how they fare on the current policy, filtered by a
    case-insensitive substring of any value and (``failing``) by failing ones."""
    engine = users.engine()
    good, bad = engine.stored_expectations()
    results = tests.run(engine.snapshot, good)
    failed = sum(1 for r in results if not r.passed)
    if q:
        q = q.lower()
        results = [r for r in results if any(q in v.lower() for v in r.expectation.as_list())]
    if failing:
        results = [r for r in results if not r.passed]
    if clamp:
        page = min(max(1, page), max(1, -(-len(results) // per_page)))
    start = (page - 1) * per_page
    return Page(
        results[start : start + per_page],
        len(results),
        page,
        per_page,
        failed,
        _unreadable_lines(bad),
    )


def unreadable() -> list[str]:
    """One line per stored policy test that does not read (edited by hand), with the id
    that removes it: while there is one, every policy write is refused."""
    return _unreadable_lines(users.engine().bad_expectations())


def _unreadable_lines(bad: Iterable[Result]) -> list[str]:
    return [f"{r.error} (id {r.expectation.id})" for r in bad]


class EmptyReplace(editing.EditError):
    """A replace by a file that holds no policy test: it would remove every promise."""


def plan(
    items: Iterable[Expectation], *, replace: bool = False, allow_empty: bool = False
) -> tuple[tuple[Expectation, ...], tuple[Expectation, ...]]:
    """The tests a write of ``items`` would add and remove, as the engine plans it (a
    stored test that does not read counts, as stored: a replace removes it too).

    :raises EmptyReplace: ``replace`` with no item would remove every stored test; a
        truncated file must not do that quietly (``allow_empty`` says it is meant).
    """
    items = list(items)
    engine = users.engine()
    good, bad = engine.stored_expectations()
    stored = [*good, *(r.expectation for r in bad)]
    if replace and not items and stored and not allow_empty:
        raise EmptyReplace(
            f"the file holds no policy test: replacing with it would remove all "
            f"{len(stored)} stored; allow an empty file to do that"
        )
    return tests.plan(stored, items, replace_all=replace)


def add(item: Expectation, who: editing.Who, *, force: bool = False) -> bool:
    """Store a policy test (replacing one for the same request); False when it was stored
    as it is already. ExpectationsBroken when the policy does not keep it."""
    added, _ = users.engine().change_expectations(
        [item], actor=who.actor, source=who.source, action="test.add", force=force
    )
    return bool(added)


def remove(test_id: str, who: editing.Who) -> Expectation:
    """Remove the policy test with this id (Missing when there is none)."""
    item = find(test_id)
    users.engine().change_expectations(
        remove=[item], actor=who.actor, source=who.source, action="test.remove"
    )
    return item


def load(
    items: Iterable[Expectation],
    who: editing.Who,
    *,
    replace: bool = False,
    force: bool = False,
    allow_empty: bool = False,
) -> tuple[tuple[Expectation, ...], tuple[Expectation, ...]]:
    """Store a file's policy tests in one audited write (``replace``: and remove the stored
    ones it does not hold); return those added and removed.

    :raises EmptyReplace: see :func:`plan`.
    """
    items = list(items)
    plan(items, replace=replace, allow_empty=allow_empty)  # refuses an empty replace
    return users.engine().change_expectations(
        items,
        actor=who.actor,
        source=who.source,
        action="tests.load",
        replace_all=replace,
        force=force,
    )


def export() -> str:
    """The stored policy tests as CSV text."""
    return tests.export(stored())


def run(
    snapshot: Snapshot | None = None, items: Iterable[Expectation] | None = None
) -> list[Result]:
    """Judge policy tests (the stored ones by default) on a snapshot (the current one)."""
    engine = users.engine()
    return tests.run(
        snapshot if snapshot is not None else engine.snapshot,
        list(items) if items is not None else engine.expectations(),
    )


def failing(items: Iterable[Expectation]) -> list[Result]:
    """The policy tests of ``items`` the current policy does not keep."""
    return tests.failures(users.engine().snapshot, items)


def policy_file_snapshot(path: str | Path) -> Snapshot:
    """The snapshot a policy file would give, before loading it (PolicyFileError lists
    every bad line)."""
    model = users.engine().model
    policy = read_policy_file(path, model)
    return Snapshot.of(0, policy.rules, model)


def tried(subject: str, method: str, path: str, note: str = "") -> Expectation:
    """A policy test promising what the policy decides now for a tried request.

    The request is decided for the subject as named (a test is about the policy, not about
    an account's state), in the spelling the engine decides on.
    """
    try_ = editing.try_request(subject, path, method)
    decision = users.engine().decide(try_.subject, try_.decision.obj, try_.decision.action)
    outcome = "allow" if decision.allowed else "deny"
    return parse(try_.subject, decision.action, decision.obj, outcome, note)


# -- what-if ------------------------------------------------------------------------------


def routes() -> list[Target]:
    """The app's route table as what-if targets, in path order (one path served by
    several views: every method)."""
    found = (
        route_target(rule.rule, rule.methods or ()) for rule in current_app.url_map.iter_rules()
    )
    return sorted(unique_targets(t for t in found if t is not None), key=lambda t: t.label)


def _active(candidates: Collection[str]) -> Collection[str]:
    return users.active_emails(candidates)


def what_if(change: Change, *, strict: bool = False, force: bool = False) -> WhatIf:
    """The effect of a change on the stored policy, and whether a write would be refused;
    nothing is written.

    :raises RuleError, NotFound: a row that does not validate, or (``strict``) a row to
        remove that is absent.
    """
    planned = users.engine().what_if(change, strict=strict, force=force)
    return compare(
        planned.before,
        planned.after,
        added=planned.added,
        removed=planned.removed,
        routes=routes(),
        expectations=planned.expectations,
        active=_active,
        refused=str(planned.refused) if planned.refused is not None else None,
    )
