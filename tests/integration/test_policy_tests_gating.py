"""Policy tests gate every policy write of the service, whoever makes it.

Each surface (editor, API, CLI) has its own tests; these are the writes that do not come
from an editor: account creation, a visitor's registration, service tokens, a policy file
loaded by ops, and the tests a fresh install stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from authz import Rule
from authz import csvio
from authz.expectations import ExpectationsBroken
from authz.expectations import expectation
from service import editing
from service import loading
from service import policy_tests
from service import tokens
from service import users
from service.config import shipped
from service.extensions import db
from service.models import ServiceToken
from service.models import User
from tests.conftest import AuthActions
from tests.conftest import dispose
from tests.conftest import make_app

WHO = editing.Who("owner@example.com", "cli")
CAROL = "carol@example.com"


@dataclass(frozen=True)
class Written:
    revision: int
    audit: int
    accounts: int
    tokens: int


def written(app: Flask) -> Written:
    """What a refused write must leave as it was."""
    with app.app_context():
        engine = users.engine()
        return Written(
            engine.store.revision(),
            len(engine.store.audit_entries(limit=10_000)),
            db.session.scalar(sa.select(sa.func.count()).select_from(User)) or 0,
            db.session.scalar(sa.select(sa.func.count()).select_from(ServiceToken)) or 0,
        )


def promise(app: Flask, *values: str) -> None:
    with app.app_context():
        policy_tests.add(expectation(*values), WHO)


def test_an_account_created_with_a_role_a_test_forbids_is_refused(app: Flask) -> None:
    promise(app, CAROL, "GET", "/admin/", "deny", "carol is a contractor")
    before = written(app)
    with app.app_context(), pytest.raises(ExpectationsBroken, match="carol@example.com may not"):
        users.create(CAROL, "carol-password-1", roles=["admin"], actor="a", source="cli")
    assert written(app) == before
    with app.app_context():
        users.create(CAROL, "carol-password-1", roles=["user"], actor="a", source="cli")
    assert written(app).accounts == before.accounts + 1


def test_a_visitor_refused_by_a_test_learns_nothing_about_it(app: Flask) -> None:
    """The register page says the account cannot be made, not which test or rule."""
    promise(app, CAROL, "GET", "/", "deny", "carol must not see the home page")
    before = written(app)
    client = app.test_client()
    response = AuthActions(client).register(CAROL, "carol-password-1")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "cannot be created here" in page
    assert "carol must not see" not in page and "p, user" not in page and "policy test" not in page
    assert written(app) == before


def test_a_token_given_a_role_a_test_forbids_is_not_created(app: Flask) -> None:
    promise(app, "token:ci", "POST", "/api/v1/policy/rules", "deny")
    before = written(app)
    with app.app_context(), pytest.raises(ExpectationsBroken, match="token:ci may not POST"):
        tokens.create("ci", roles=["admin"], actor="a", source="cli")
    assert written(app) == before


def test_a_token_is_revoked_even_when_a_test_promised_it_access(app: Flask) -> None:
    """A leaked token must go: its own promises do not hold the revoke up."""
    with app.app_context():
        tokens.create("ci", roles=["admin"], actor="a", source="cli")
    promise(app, "token:ci", "GET", "/api/v1/policy/rules", "allow")
    with app.app_context():
        tokens.revoke("ci", actor="ops", source="cli")
        engine = users.engine()
        assert not engine.decide("token:ci", "/api/v1/policy/rules", "GET").allowed
        entry = engine.store.audit_entries(limit=1)[0]
        assert entry.action == "token.revoke" and entry.forced
        assert "token:ci may GET /api/v1/policy/rules" in entry.detail


def test_a_role_assignment_is_refused_and_the_answer_names_the_rule(app: Flask) -> None:
    promise(app, "user@example.com", "GET", "/metrics", "deny")
    before = written(app)
    with app.app_context(), pytest.raises(ExpectationsBroken) as caught:
        editing.assign("user@example.com", "admin", editing.Who("admin@example.com", "web"))
    result = caught.value.results[0]
    assert result.rule == Rule.of("p", "admin", "/metrics", "GET", "allow")
    assert editing.http_outcome(caught.value) == (409, "Refused by policy tests", "policy-tests")
    assert written(app) == before


@pytest.mark.parametrize("replace", [False, True])
def test_a_policy_file_that_breaks_a_test_is_not_loaded(
    app: Flask, tmp_path: Path, replace: bool
) -> None:
    promise(app, "anonymous", "GET", "/admin/", "deny")
    with app.app_context():
        current = users.engine().rules()
    lines = [str(r) for r in current] + ["p, anonymous, /admin/*, GET, allow"]
    path = tmp_path / "policy.csv"
    path.write_text("\n".join(lines) + "\n")
    before = written(app)
    with app.app_context():
        engine = users.engine()
        policy = csvio.read_file(path, engine.model)
        with pytest.raises(ExpectationsBroken):
            loading.load(engine, policy, WHO, replace=replace)
    assert written(app) == before
    with app.app_context():
        engine = users.engine()
        loading.load(engine, policy, WHO, replace=replace, force=True)
        assert engine.decide("anonymous", "/admin/", "GET").allowed
        assert engine.store.audit_entries(limit=1)[0].forced


def test_a_fresh_install_stores_the_shipped_tests(tmp_path: Path) -> None:
    app = make_app(tmp_path, default_tests=shipped("default-tests.csv"))
    try:
        with app.app_context():
            stored = policy_tests.stored()
            shipped_tests = policy_tests.tests.read_file(shipped("default-tests.csv"))
            assert stored == list(shipped_tests.expectations)
            assert not [r for r in policy_tests.run() if not r.passed]
            actions = [e.action for e in users.engine().store.audit_entries(limit=50)]
            assert "tests.init" in actions
            with pytest.raises(ExpectationsBroken, match="anonymous may not GET /admin/"):
                editing.add(Rule.of("p", "anonymous", "/admin/*", "GET", "allow"), WHO)
    finally:
        dispose(app)
