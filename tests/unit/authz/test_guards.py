"""authz.guards: no change may leave nobody active able to open the policy editor."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable

import pytest
from sqlalchemy.orm import Session

from authz.engine import Change
from authz.engine import PolicyEngine
from authz.errors import LockoutRefused
from authz.guards import LockoutGuard
from authz.model import PolicyModel
from authz.rules import Rule
from authz.snapshot import Snapshot
from authz.store import PolicyStore

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"
ALICE_ADMIN = Rule.of("g", ALICE, "admin")
EDITOR_RULE = Rule.of("p", "admin", "/admin/*", ".*", "allow")


class Accounts:
    """The caller's view of active users: a provider the engine calls inside its transaction."""

    def __init__(self, *active: str) -> None:
        self.active = list(active)
        self.sessions: list[Session] = []

    def __call__(self, session: Session) -> Iterable[str]:
        self.sessions.append(session)
        return list(self.active)


@pytest.fixture
def accounts() -> Accounts:
    """Alice and Bob are active; Carol has an account but is deactivated."""
    return Accounts(ALICE, BOB)


@pytest.fixture
def guarded(
    model: PolicyModel,
    store: PolicyStore,
    default_rules: tuple[Rule, ...],
    accounts: Accounts,
) -> PolicyEngine:
    """An engine with the lockout guard, the default policy, and Alice as the only admin."""
    engine = PolicyEngine(
        model, store, guard=LockoutGuard(path="/admin/", method="GET"), active_subjects=accounts
    )
    engine.load()
    engine.apply(
        Change.adding(
            *default_rules, ALICE_ADMIN, Rule.of("g", BOB, "user"), Rule.of("g", CAROL, "admin")
        ),
        actor="test",
        source="cli",
    )
    return engine


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(Change.removing(ALICE_ADMIN), id="remove-only-admin"),
        pytest.param(Change.removing(EDITOR_RULE), id="remove-editor-rule"),
        pytest.param(
            Change.removing(Rule.of("g", "admin", "user"), EDITOR_RULE), id="remove-several"
        ),
        pytest.param(
            Change.adding(Rule.of("p", "admin", "/admin/*", "GET", "deny")), id="deny-editor"
        ),
        pytest.param(Change.adding(Rule.of("p", ALICE, "/admin/", "GET", "deny")), id="deny-alice"),
    ],
)
def test_a_change_locking_out_the_last_editor_is_refused(
    guarded: PolicyEngine, db_state: Callable, change: Change
) -> None:
    """Taking the editor from the only active user who has it raises and changes nothing."""
    before, snapshot = db_state(), guarded.snapshot
    with pytest.raises(LockoutRefused, match="GET /admin/"):
        guarded.apply(change, actor="test", source="api")
    assert db_state() == before
    assert guarded.snapshot is snapshot
    assert guarded.decide(ALICE, "/admin/", "GET").allowed


def test_deactivating_the_last_editor_in_a_hook_is_refused(
    guarded: PolicyEngine, accounts: Accounts, db_state: Callable
) -> None:
    """A hook names the subjects it deactivates; the guard counts them out."""
    before = db_state()

    def deactivate_alice(session: Session) -> list[str]:
        accounts.active.remove(ALICE)
        return [ALICE]

    with pytest.raises(LockoutRefused):
        guarded.apply(Change(), actor="test", source="web", hook=deactivate_alice)
    assert db_state() == before
    assert all(isinstance(s, Session) for s in accounts.sessions)


def test_force_lets_the_change_through_and_is_audited(
    guarded: PolicyEngine, store: PolicyStore, db_state: Callable
) -> None:
    """force=True (the CLI's escape hatch) applies the change and marks the entry forced."""
    before = db_state()
    applied = guarded.apply(Change.removing(ALICE_ADMIN), actor="root", source="cli", force=True)
    assert applied.removed == (ALICE_ADMIN,)
    after = db_state()
    assert after.revision == before.revision + 1
    assert ALICE_ADMIN not in after.rules
    entry = store.audit_entries(limit=1)[0]
    assert (entry.actor, entry.source, entry.forced, entry.removed) == (
        "root",
        "cli",
        True,
        (ALICE_ADMIN,),
    )
    assert not guarded.decide(ALICE, "/admin/", "GET").allowed


def test_changes_are_allowed_while_another_active_editor_remains(
    guarded: PolicyEngine, accounts: Accounts
) -> None:
    """With Bob also an admin, Alice may lose the role."""
    guarded.apply(Change.adding(Rule.of("g", BOB, "admin")), actor="test", source="api")
    guarded.apply(Change.removing(ALICE_ADMIN), actor="test", source="api")
    assert guarded.decide(BOB, "/admin/", "GET").allowed
    assert not guarded.decide(ALICE, "/admin/", "GET").allowed


def test_inactive_editors_do_not_count(guarded: PolicyEngine) -> None:
    """Carol is an admin but deactivated: she does not keep the editor reachable."""
    assert guarded.decide(CAROL, "/admin/", "GET").allowed
    with pytest.raises(LockoutRefused):
        guarded.apply(Change.removing(ALICE_ADMIN), actor="test", source="api")


def test_changes_are_allowed_when_nobody_held_the_editor(
    model: PolicyModel, store: PolicyStore, default_rules: tuple[Rule, ...], db_state: Callable
) -> None:
    """On a fresh install nobody active holds the editor, so setting up is not refused."""
    engine = PolicyEngine(model, store, guard=LockoutGuard(), active_subjects=Accounts(BOB))
    engine.load()
    engine.apply(Change.adding(*default_rules, Rule.of("g", BOB, "user")), actor="t", source="cli")
    engine.apply(Change.removing(EDITOR_RULE), actor="t", source="cli")
    engine.apply(
        Change.adding(Rule.of("p", "admin", "/admin/*", ".*", "deny")), actor="t", source="cli"
    )
    assert EDITOR_RULE not in db_state().rules
    assert not engine.decide(BOB, "/admin/", "GET").allowed


def test_without_a_subjects_provider_the_guard_is_not_consulted(
    model: PolicyModel, store: PolicyStore, default_rules: tuple[Rule, ...]
) -> None:
    """The guard needs the caller's active users; without them it cannot and does not refuse."""
    engine = PolicyEngine(model, store, guard=LockoutGuard())
    engine.load()
    engine.apply(Change.adding(*default_rules, ALICE_ADMIN), actor="t", source="cli")
    engine.apply(Change.removing(ALICE_ADMIN), actor="t", source="cli")
    assert not engine.decide(ALICE, "/admin/", "GET").allowed


@pytest.mark.parametrize(
    ("path", "method", "holders"),
    [
        ("/admin/", "GET", [ALICE]),
        ("/", "GET", [ALICE, BOB]),
        ("/login", "POST", [ALICE, BOB, "anonymous"]),
        ("/nowhere", "GET", []),
    ],
)
def test_holders(
    model: PolicyModel, default_rules: tuple[Rule, ...], path: str, method: str, holders: list[str]
) -> None:
    """holders() lists the given subjects who may make the guarded request."""
    snapshot = Snapshot.of(1, (*default_rules, ALICE_ADMIN, Rule.of("g", BOB, "user")), model)
    guard = LockoutGuard(path=path, method=method)
    assert guard.holders(snapshot, [ALICE, BOB, CAROL, "anonymous"]) == holders


class Reads:
    """Active subjects as a guard sees them, counting how often each kind of read runs."""

    def __init__(self, *active: str) -> None:
        self.active = list(active)
        self.full = 0
        self.lookups: list[str] = []

    def all(self) -> list[str]:
        self.full += 1
        return list(self.active)

    def one(self, subject: str) -> bool:
        self.lookups.append(subject)
        return subject in self.active


def check(guard: LockoutGuard, before: Snapshot, after: Snapshot, reads: Reads, **kw: object):
    return guard.check(before, after, active=reads.all, is_active=reads.one, **kw)  # type: ignore[arg-type]


def test_check_compares_before_and_after(
    model: PolicyModel, default_rules: tuple[Rule, ...]
) -> None:
    """check() refuses only a loss of the last holder, not a state that had none."""
    with_alice = Snapshot.of(1, (*default_rules, ALICE_ADMIN), model)
    without = Snapshot.of(2, default_rules, model)
    guard = LockoutGuard()
    with pytest.raises(LockoutRefused):
        check(guard, with_alice, without, Reads(ALICE))
    assert check(guard, without, without, Reads(ALICE)) is None
    assert check(guard, without, with_alice, Reads(ALICE)) == ALICE
    assert check(guard, with_alice, with_alice, Reads(ALICE)) == ALICE
    with pytest.raises(LockoutRefused):
        check(guard, with_alice, with_alice, Reads(), leaving=[ALICE])


def test_a_witness_that_keeps_the_editor_costs_one_lookup(
    model: PolicyModel, default_rules: tuple[Rule, ...]
) -> None:
    """While the last witness still holds the editor, no list of active users is read."""
    snapshot = Snapshot.of(1, (*default_rules, ALICE_ADMIN, Rule.of("g", BOB, "admin")), model)
    reads = Reads(ALICE, BOB, CAROL)
    assert check(LockoutGuard(), snapshot, snapshot, reads, witness=BOB) == BOB
    assert (reads.full, reads.lookups) == (0, [BOB])


@pytest.mark.parametrize(
    ("why", "witness", "active", "leaving"),
    [
        ("deactivated meanwhile", BOB, [ALICE], []),
        ("deactivated by this change", BOB, [ALICE, BOB], [BOB]),
        ("lost the editor", CAROL, [ALICE, CAROL], []),
    ],
)
def test_a_witness_that_no_longer_counts_makes_the_guard_look_again(
    model: PolicyModel,
    default_rules: tuple[Rule, ...],
    why: str,
    witness: str,
    active: list[str],
    leaving: list[str],
) -> None:
    """The full read runs when the witness is inactive, leaving or no longer a holder."""
    snapshot = Snapshot.of(1, (*default_rules, ALICE_ADMIN, Rule.of("g", BOB, "admin")), model)
    reads = Reads(*active)
    assert (
        check(LockoutGuard(), snapshot, snapshot, reads, witness=witness, leaving=leaving) == ALICE
    )
    assert reads.full == 1


def test_the_engine_remembers_its_witness(guarded: PolicyEngine, accounts: Accounts) -> None:
    """After one full read, further guarded writes ask only whether the witness is active."""
    guarded.apply(
        Change.adding(Rule.of("p", "user", "/a", "GET", "allow")), actor="t", source="api"
    )
    reads = len(accounts.sessions)
    for n in range(5):
        guarded.apply(
            Change.adding(Rule.of("p", "user", f"/b{n}", "GET", "allow")), actor="t", source="api"
        )
    # The engine was built without a one-subject check: it asks the provider, once per write.
    assert len(accounts.sessions) - reads == 5
