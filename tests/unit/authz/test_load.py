"""Stored rows are trusted no more than written ones: validation at load, on a real SQLite file.

Bad rows are written around the engine with raw SQL (as a hand edit or an old release
would), then an engine loads them: a row skipping which can only deny is skipped and
listed; a row skipping which could grant refuses the policy (503), and the next revision
that removes it is picked up by every instance.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from authz.engine import Change
from authz.engine import PolicyEngine
from authz.errors import EngineUnavailable
from authz.errors import RuleError
from authz.model import PolicyModel
from authz.rules import Rule
from authz.snapshot import Snapshot
from authz.store import PolicyStore

ALICE = "alice@example.com"
U1 = "u1@example.com"
MODELS = Path(__file__).resolve().parents[2] / "data" / "models"


def raw_insert(store: PolicyStore, ptype: str, *values: str | None) -> int:
    """Insert one casbin_rule row with plain SQL; return its id."""
    columns = ["ptype", *(f"v{i}" for i in range(len(values)))]
    params = {"ptype": ptype, **{f"v{i}": v for i, v in enumerate(values)}}
    sql = (
        f"INSERT INTO casbin_rule ({', '.join(columns)}) "  # noqa: S608 - test-made names
        f"VALUES ({', '.join(':' + c for c in columns)})"
    )
    with store.engine.begin() as conn:
        result = conn.execute(sa.text(sql), params)
        assert result.lastrowid is not None
        return int(result.lastrowid)


def second_engine(model: PolicyModel, store: PolicyStore) -> PolicyEngine:
    """Another instance on the same SQLite file, through its own connection pool."""
    other = PolicyEngine(model, PolicyStore(sa.create_engine(store.engine.url)))
    other.load()
    return other


# -- skipped: rows whose absence can only deny -------------------------------------------


def test_an_allow_row_with_an_extra_value_is_skipped(
    engine: PolicyEngine, store: PolicyStore, caplog: pytest.LogCaptureFixture
) -> None:
    """``p, user, /probe, GET, allow, x``: Casbin refuses its size; we neither use nor grant it."""
    row_id = raw_insert(store, "p", "user", "/probe", "GET", "allow", "x")
    with caplog.at_level(logging.ERROR, logger="authz"):
        engine.load()
    assert engine.refused is None
    [bad] = engine.bad_rows
    assert bad.id == row_id
    assert bad.rule == Rule.of("p", "user", "/probe", "GET", "allow", "x")
    assert "4 values" in bad.reason
    assert f"row {row_id}" in caplog.text
    assert not engine.decide("user", "/probe", "GET").allowed
    assert engine.decide("user", "/", "GET").allowed  # everything else still decides


def test_a_short_allow_row_is_skipped_and_decisions_do_not_break(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """``p, user, /zzz, GET`` is an allow row (the effect omitted); ``p, user, /zzz`` is refused."""
    raw_insert(store, "p", "user", "/short", "GET")  # omitted effect: allow, as when written
    raw_insert(store, "p", "user", "/zzz")  # which effect? unknown: could be a deny
    engine.load()
    assert engine.refused is not None and "/zzz" in engine.refused
    with pytest.raises(EngineUnavailable, match="refused"):
        engine.decide("user", "/", "GET")


def test_a_link_with_an_extra_value_is_skipped_when_no_deny_reaches_through_it(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """``g, u1@example.com, admin, x`` would make u1 an admin in Casbin; here it is not used."""
    raw_insert(store, "g", U1, "admin", "x")
    engine.load()
    assert engine.refused is None
    assert [b.rule for b in engine.bad_rows] == [Rule.of("g", U1, "admin", "x")]
    assert not engine.decide(U1, "/admin/", "GET").allowed
    assert "admin" not in engine.roles_for(U1)


def test_rows_of_a_type_the_model_lacks_are_skipped_on_the_index(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """After a model change a ``p2``/``g2`` row means nothing: skipped, as Casbin's loader does."""
    raw_insert(store, "p2", "user", "/p2", "GET", "deny")
    raw_insert(store, "g2", U1, "admin")
    engine.load()
    assert engine.snapshot.kind == "index"
    assert engine.refused is None
    assert sorted(b.rule.ptype for b in engine.bad_rows) == ["g2", "p2"]
    assert all("unknown rule type" in b.reason for b in engine.bad_rows)
    assert engine.decide("user", "/", "GET").allowed


def test_rows_of_a_type_the_model_lacks_are_skipped_on_the_fallback(store: PolicyStore) -> None:
    """The Casbin fallback loads the same way (it used to raise KeyError at load)."""
    model = PolicyModel.from_file(MODELS / "fallback_or.conf")
    engine = PolicyEngine(model, store)
    raw_insert(store, "p", "user", "/a", "GET", "allow")
    raw_insert(store, "p3", "user", "/a", "GET", "deny")
    raw_insert(store, "g", ALICE, "user")
    engine.load()
    assert engine.snapshot.kind == "casbin"
    assert [b.rule.ptype for b in engine.bad_rows] == ["p3"]
    assert engine.decide(ALICE, "/a", "GET").allowed
    # In memory too: Snapshot.of skips what the model has no type for.
    allow = Rule.of("p", "user", "/a", "GET", "allow")
    assert Snapshot.of(1, [Rule.of("p9", "x"), allow], model).rules == (allow,)


def test_null_inside_a_row_is_a_bad_row_not_a_shifted_one(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """``p, user, /n, NULL, allow``: not read as a shorter row with its values shifted."""
    row_id = raw_insert(store, "p", "user", "/n", None, "allow")
    engine.load()
    [bad] = engine.bad_rows
    assert bad.id == row_id
    assert not engine.decide("user", "/n", "GET").allowed


# -- refused: rows whose absence could grant -----------------------------------------------


def test_a_bad_deny_row_refuses_the_policy(engine: PolicyEngine, store: PolicyStore) -> None:
    """Skipping ``p, user, /, GET , deny`` (a trailing space) would grant what it denies."""
    raw_insert(store, "p", "user", "/", "GET ", "deny")
    engine.load()
    assert engine.refused is not None and "could grant" in engine.refused
    with pytest.raises(EngineUnavailable):
        engine.decide("user", "/", "GET")
    with pytest.raises(EngineUnavailable):
        engine.decide("anonymous", "/login", "GET")


def test_a_bad_link_through_which_a_deny_applies_refuses_the_policy(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """``g, u1, blocked, x``: skipping the link drops the deny rows u1 inherits from blocked."""
    engine.apply(
        Change.adding(
            Rule.of("p", "blocked", "/*", ".*", "deny"), Rule.of("g", "blocked", "muted")
        ),
        actor="t",
        source="cli",
    )
    raw_insert(store, "g", U1, "blocked", "x")
    engine.load()
    assert engine.refused is not None and "blocked" in engine.refused


def test_a_bad_link_is_skipped_under_allow_override(store: PolicyStore) -> None:
    """Where deny rows never count, skipping anything can only deny."""
    model = PolicyModel.from_file(MODELS / "rbac_equal.conf")  # some(where allow)
    engine = PolicyEngine(model, store)
    raw_insert(store, "p", "blocked", "/x", "GET", "deny")
    raw_insert(store, "p", "blocked", "/x", "GET", "Deny ")
    raw_insert(store, "g", U1, "blocked", "x")
    engine.load()
    assert engine.refused is None
    assert len(engine.bad_rows) == 2


def test_a_bad_row_under_a_priority_effect_refuses_unless_it_allows(store: PolicyStore) -> None:
    """Priority effects: an allow row may be skipped; a row that may deny may not."""
    model = PolicyModel.from_file(MODELS / "fallback_priority.conf")
    engine = PolicyEngine(model, store)
    raw_insert(store, "p", "1", "user", "/x", "GET", "allow", "extra")
    engine.load()
    assert engine.refused is None and len(engine.bad_rows) == 1
    raw_insert(store, "p", "1", "user", "/x", "GET", "deny", "extra")
    engine.load()
    assert engine.refused is not None


# -- recovery: a bad row never stops later revisions -------------------------------------


def test_a_revoke_after_a_skipped_row_reaches_another_instance(
    engine: PolicyEngine, model: PolicyModel, store: PolicyStore
) -> None:
    """Engine A writes a revoke after a skipped bad row; engine B refreshes and sees it."""
    engine.apply(
        Change.adding(Rule.of("p", "user", "/reports", "GET", "allow"), Rule.of("g", U1, "user")),
        actor="t",
        source="cli",
    )
    raw_insert(store, "p", "user", "/probe", "GET", "allow", "x")
    engine.load()
    other = second_engine(model, store)
    assert other.decide(U1, "/reports", "GET").allowed
    assert len(other.bad_rows) == 1
    engine.apply(
        Change.removing(Rule.of("p", "user", "/reports", "GET", "allow")), actor="t", source="cli"
    )
    assert other.refresh()
    assert not other.decide(U1, "/reports", "GET").allowed
    assert other.revision == engine.revision
    assert len(other.bad_rows) == 1  # still listed until someone removes it


def test_removing_the_bad_row_recovers_every_instance(
    engine: PolicyEngine, model: PolicyModel, store: PolicyStore
) -> None:
    """A refused policy: the admin removes the row (as stored), every instance decides again."""
    raw_insert(store, "p", "user", "/", "GET", "deny", "x")
    engine.load()
    other = second_engine(model, store)
    assert engine.refused is not None and other.refused is not None
    bad = engine.bad_rows[0].rule
    # The row has the wrong length; the write path still removes it, named as stored.
    applied = engine.apply(Change.removing(bad), actor="admin", source="api")
    assert applied.removed == (bad,)
    assert engine.refused is None and engine.bad_rows == ()
    assert engine.decide("user", "/", "GET").allowed
    assert other.refresh()
    assert other.refused is None
    assert other.decide("user", "/", "GET").allowed


def test_a_refused_policy_is_reloaded_without_a_new_revision(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """Fixed by hand (no revision bump): the next refresh still picks the fix up."""
    row_id = raw_insert(store, "p", "user", "/", "GET ", "deny")
    engine.load()
    assert engine.refused is not None
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM casbin_rule WHERE id = :id"), {"id": row_id})
    assert engine.refresh()
    assert engine.refused is None
    assert engine.decide("user", "/", "GET").allowed


def test_a_row_that_names_no_stored_bad_row_is_still_refused_by_shape(
    engine: PolicyEngine,
) -> None:
    """Removal by exact stored value only: a made-up short row is still a RuleError."""
    with pytest.raises(RuleError):
        engine.apply(Change.removing(Rule.of("p", "user")), actor="t", source="cli")


def test_reload_validates_only_new_rows(engine: PolicyEngine, store: PolicyStore) -> None:
    """A reload trusts the rows the current snapshot decided on; new ones are checked."""
    raw_insert(store, "p", "user", "/new", "GET", "allow")
    raw_insert(store, "p", "user", "/bad", "GET", "allow", "x")
    engine.load()
    assert Rule.of("p", "user", "/new", "GET", "allow") in engine.snapshot.ruleset
    assert [b.rule.values[1] for b in engine.bad_rows] == ["/bad"]


# -- catastrophic patterns that reached the table around the write path -------------------


def test_a_stored_catastrophic_allow_pattern_is_skipped_not_evaluated(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """The row that froze every worker, stored by hand: skipped at load, never run."""
    raw_insert(store, "p", "anonymous", "/redos", "(A+)+$", "allow")
    raw_insert(store, "p", "anonymous", "/*/*/*/*/*/*/*/*/*/*/x", "GET", "allow")
    engine.load()
    assert {b.rule.values[1] for b in engine.bad_rows} >= {"/redos", "/*/*/*/*/*/*/*/*/*/*/x"}
    assert engine.refused is None
    # The attack inputs are decided at once (denied: the rows are not in the policy).
    assert not engine.decide("anonymous", "/redos", "A" * 28 + "!").allowed
    assert not engine.decide("anonymous", "/a" * 40, "GET").allowed


def test_a_stored_catastrophic_deny_pattern_refuses_the_policy(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """Skipping a deny row could grant: the policy is refused (503), the pattern never runs."""
    raw_insert(store, "p", "anonymous", "/redos", "(A+)+$", "deny")
    engine.load()
    assert engine.refused is not None
    with pytest.raises(EngineUnavailable):
        engine.decide("anonymous", "/redos", "A" * 28 + "!")


# -- rows Casbin's own database loader reads as another row --------------------------------


@pytest.mark.parametrize("ptype", ["p ", " p", "p\t"])
def test_a_deny_row_whose_type_is_padded_refuses_the_policy(
    engine: PolicyEngine, store: PolicyStore, ptype: str
) -> None:
    """Casbin's adapter trims every token: to it, ``'p '`` is a ``p`` row. Skipping such a
    deny row as "a type the model lacks" would grant what Casbin denies."""
    engine.apply(
        Change.adding(Rule.of("p", "user", "/secret", "GET", "allow")), actor="t", source="cli"
    )
    raw_insert(store, ptype, "user", "/secret", "GET", "deny")
    engine.load()
    assert engine.refused is not None and "could grant" in engine.refused
    with pytest.raises(EngineUnavailable):
        engine.decide("user", "/secret", "GET")


def test_a_whole_deny_line_in_the_type_column_refuses_the_policy(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """``ptype = 'p, user, /secret, GET, deny'`` and no values: Casbin loads a deny row."""
    engine.apply(
        Change.adding(Rule.of("p", "user", "/secret", "GET", "allow")), actor="t", source="cli"
    )
    raw_insert(store, "p, user, /secret, GET, deny")
    engine.load()
    assert engine.refused is not None
    with pytest.raises(EngineUnavailable):
        engine.decide("user", "/secret", "GET")


def test_a_padded_link_through_which_a_deny_applies_refuses_the_policy(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """``'g '`` links bob to a role whose deny rows would apply to him."""
    engine.apply(
        Change.adding(
            Rule.of("p", "bob@example.com", "/secret", "GET", "allow"),
            Rule.of("p", "locked", "/secret", "GET", "deny"),
        ),
        actor="t",
        source="cli",
    )
    raw_insert(store, "g ", "bob@example.com", "locked")
    engine.load()
    assert engine.refused is not None
    with pytest.raises(EngineUnavailable):
        engine.decide("bob@example.com", "/secret", "GET")


def test_a_padded_allow_row_is_still_only_skipped(engine: PolicyEngine, store: PolicyStore) -> None:
    """Skipping ``'p '`` allow rows can only deny: the policy keeps deciding."""
    raw_insert(store, "p ", "user", "/n", "GET", "allow")
    engine.load()
    assert engine.refused is None
    assert not engine.decide("user", "/n", "GET").allowed
