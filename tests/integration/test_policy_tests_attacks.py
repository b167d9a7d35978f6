"""Attacks on the policy-test gate through the service, on each database backend: two
instances writing at once, a database without the tests' table, a failing read of the
tests, and what a refused write leaves behind.

A test here that fails shows a hole (its docstring says which); one that passes guards
a hole that was tried and found closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from authz import Rule
from authz import csvio
from authz.engine import STAGE_FROM
from authz.errors import PolicyFileError
from authz.expectations import ExpectationsBroken
from authz.expectations import expectation
from service import create_app
from service import editing
from service import loading
from service import policy_tests
from service import users
from service.bootstrap import init_database
from service.extensions import db
from tests.conftest import app_config
from tests.conftest import bearer
from tests.conftest import dispose
from tests.conftest import make_token

WHO = editing.Who("owner@example.com", "cli")
API = "/api/v1"


def promise(app: Flask, *values: str) -> None:
    with app.app_context():
        policy_tests.add(expectation(*values), WHO)


def changes_logged(app: Flask) -> int:
    with app.app_context():
        return int(db.session.scalar(sa.text("SELECT count(*) FROM policy_change")) or 0)


def audit_count(app: Flask) -> int:
    with app.app_context():
        return int(db.session.scalar(sa.text("SELECT count(*) FROM audit_log")) or 0)


@pytest.fixture
def second(app: Flask, tmp_path: Path) -> Iterator[Flask]:
    """Another instance of the service on the same database."""
    other = create_app(app_config(tmp_path))
    yield other
    dispose(other)


def test_a_policy_file_merged_while_an_editor_writes_keeps_every_promise(
    app: Flask,
    second: Flask,
    tmp_path: Path,
    write_in_between: Callable[[Callable[[], None]], None],
) -> None:
    """Was a hole (high): ops merge a large policy file that adds visitors to ``auditors`` (a
    role that may do nothing) while an admin, on another instance, lets ``auditors`` read
    the editor (a role nobody is in). Each write keeps "anonymous may not GET /admin/";
    the staged merge is judged on the policy it planned, without the admin's row, and
    commits: visitors open the editor. Fix (authz/engine.py, _commit_staged): when a
    rebase happened, judge the guard and the tests on ``planned.after`` with the rebase's
    ``plus``/``minus`` applied (the policy as it will be committed), not on
    ``planned.after``."""
    promise(app, "anonymous", "GET", "/admin/", "deny", "visitors never open the editor")
    lines = [f"p, team{i}, /t/{i}, GET, allow" for i in range(STAGE_FROM)]
    lines.append("g, anonymous, auditors")
    path = tmp_path / "merge.csv"
    path.write_text("\n".join(lines) + "\n")

    def admin_writes() -> None:
        with second.app_context():
            editing.add(
                Rule.of("p", "auditors", "/admin/*", "GET", "allow"),
                editing.Who("admin@example.com", "web"),
            )

    write_in_between(admin_writes)
    with app.app_context():
        engine = users.engine()
        policy = csvio.read_file(path, engine.model)
        try:
            loading.load(engine, policy, WHO, replace=False)
        except ExpectationsBroken:
            pass  # the fix
    with app.app_context():
        users.engine().refresh()
    response = app.test_client().get("/admin/")
    assert response.status_code in (302, 401), "visitors reach the policy editor"


def test_a_test_stored_on_one_instance_gates_a_large_write_on_the_other(
    app: Flask,
    second: Flask,
    tmp_path: Path,
    write_in_between: Callable[[Callable[[], None]], None],
) -> None:
    """Held: the staged write reads the tests under the policy lock, on every backend."""
    lines = [f"p, team{i}, /t/{i}, GET, allow" for i in range(STAGE_FROM)]
    lines.append("p, anonymous, /admin/*, GET, allow")
    path = tmp_path / "merge.csv"
    path.write_text("\n".join(lines) + "\n")
    write_in_between(
        lambda: promise(second, "anonymous", "GET", "/admin/", "deny", "stored meanwhile")
    )
    revision = None
    with app.app_context():
        engine = users.engine()
        revision = engine.store.revision()
        policy = csvio.read_file(path, engine.model)
        with pytest.raises(ExpectationsBroken, match="stored meanwhile|anonymous may not"):
            loading.load(engine, policy, WHO, replace=False)
        assert engine.store.revision() == revision
    assert app.test_client().get("/admin/").status_code in (302, 401)


def test_a_database_without_the_tests_table_answers_503_to_writes(app: Flask) -> None:
    """Held: at migration 0008 (no policy_expectation table), a rule added through the API
    is refused with 503 (never 500, never written unchecked); decisions go on."""
    secret = make_token(app)
    with app.app_context():
        db.session.execute(sa.text("DROP TABLE policy_expectation"))
        db.session.commit()
        revision = users.engine().store.revision()
    audits, logged = audit_count(app), changes_logged(app)
    client = app.test_client()
    body = {"subject": "anonymous", "path": "/admin/*", "methods": "GET", "effect": "allow"}
    response = client.post(f"{API}/policy/rules", json=body, headers=bearer(secret))
    assert response.status_code == 503, response.get_data(as_text=True)
    with app.app_context():
        assert users.engine().store.revision() == revision
    assert (audit_count(app), changes_logged(app)) == (audits, logged)
    assert client.get("/admin/").status_code in (302, 401)
    assert client.get("/login").status_code == 200


def test_a_failing_read_of_the_tests_answers_503_to_writes(app: Flask) -> None:
    """Held: the tests' read fails inside the write (a view whose rows raise when read):
    the API answers 503 and nothing is written."""
    secret = make_token(app)
    promise(app, "anonymous", "GET", "/admin/", "deny")
    with app.app_context():
        # Each row's subject read as JSON: an error at read time, not when the view is made.
        as_json = "json(subject)" if db.engine.dialect.name == "sqlite" else "CAST(subject AS json)"
        db.session.execute(sa.text("ALTER TABLE policy_expectation RENAME TO kept_tests"))
        db.session.execute(
            sa.text(
                # S608: the one interpolated value is one of two constants above.
                f"CREATE VIEW policy_expectation AS SELECT id, CAST({as_json} AS TEXT) AS "  # noqa: S608
                "subject, method, path, outcome, note FROM kept_tests"
            )
        )
        db.session.commit()
        revision = users.engine().store.revision()
    audits = audit_count(app)
    body = {"subject": "anonymous", "path": "/admin/*", "methods": "GET", "effect": "allow"}
    response = app.test_client().post(f"{API}/policy/rules", json=body, headers=bearer(secret))
    assert response.status_code == 503, response.get_data(as_text=True)
    with app.app_context():
        assert users.engine().store.revision() == revision
    assert audit_count(app) == audits
    assert app.test_client().get("/admin/").status_code in (302, 401)


def test_a_stored_test_edited_by_hand_still_refuses_the_api_write(app: Flask) -> None:
    """Was a hole (medium): a stored test whose outcome was edited to ``DENY`` by hand (a typo in
    an SQL fix) stops gating: the API lets visitors into the editor with a 201. Fix
    (authz/engine.py, _expect): refuse the write while any stored test does not read,
    naming the row (ExpectationsBroken or a RuleError: 409/400), instead of leaving it out."""
    secret = make_token(app)
    promise(app, "anonymous", "GET", "/admin/", "deny")
    with app.app_context():
        db.session.execute(sa.text("UPDATE policy_expectation SET outcome = 'DENY'"))
        db.session.commit()
    body = {"subject": "anonymous", "path": "/admin/*", "methods": "GET", "effect": "allow"}
    response = app.test_client().post(f"{API}/policy/rules", json=body, headers=bearer(secret))
    assert response.status_code in (400, 409, 503), response.status_code
    assert app.test_client().get("/admin/").status_code in (302, 401)


def test_a_refused_write_through_the_api_leaves_nothing_behind(app: Flask) -> None:
    """Held: 409, and no revision, no audit entry, no change-log entry."""
    secret = make_token(app)
    promise(app, "anonymous", "GET", "/admin/", "deny")
    with app.app_context():
        revision = users.engine().store.revision()
    audits, logged = audit_count(app), changes_logged(app)
    body = {"subject": "anonymous", "path": "/admin/*", "methods": "GET", "effect": "allow"}
    response = app.test_client().post(f"{API}/policy/rules", json=body, headers=bearer(secret))
    assert response.status_code == 409
    assert "anonymous may not GET /admin/" in response.get_data(as_text=True)
    with app.app_context():
        assert users.engine().store.revision() == revision
    assert (audit_count(app), changes_logged(app)) == (audits, logged)


def test_tests_stored_and_writes_made_at_once_on_two_instances_keep_every_promise(
    app: Flask, second: Flask
) -> None:
    """Held: storing a test takes the policy lock on every backend; of a write opening the
    editor to visitors and a test forbidding it, made at once on two instances, exactly
    one is refused, and the stored policy keeps every stored test."""
    refused: list[Exception] = []
    start = threading.Barrier(2)

    def write() -> None:
        with second.app_context():
            users.engine().refresh()  # this instance polls no revision by itself
            start.wait()
            try:
                editing.add(Rule.of("p", "anonymous", "/admin/*", "GET", "allow"), WHO)
            except ExpectationsBroken as e:
                refused.append(e)

    def store() -> None:
        start.wait()
        try:
            promise(app, "anonymous", "GET", "/admin/", "deny")
        except ExpectationsBroken as e:
            refused.append(e)

    for _round in range(3):
        threads = [threading.Thread(target=write), threading.Thread(target=store)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with app.app_context():
            engine = users.engine()
            engine.refresh()
            assert all(r.passed for r in policy_tests.run())
            items = policy_tests.stored()
            opened = engine.decide("anonymous", "/admin/", "GET").allowed
            assert not (items and opened)
            # Back to the start for the next round.
            if items:
                policy_tests.remove(items[0].id, WHO)
            if opened:
                editing.remove(Rule.of("p", "anonymous", "/admin/*", "GET", "allow").id, WHO)
    assert len(refused) == 3


@pytest.mark.fresh_install
def test_an_init_that_stopped_before_the_tests_stores_them_when_run_again(
    tmp_path: Path,
) -> None:
    """Was a hole (low): ``db init`` writes the default policy, then the shipped tests in a
    second transaction; when the tests file cannot be read the first time (a typo fixed
    since), a second ``db init`` sees a policy already there and never stores them:
    the install ran ungated, silently. Now the tests file is read before the policy is
    written: a bad one stops the first init with nothing written."""
    tests_file = tmp_path / "tests.csv"
    tests_file.write_text("anonymous, GET, /admin/, nope\n")
    app = create_app(app_config(tmp_path, default_tests=str(tests_file)))
    try:
        with app.app_context(), pytest.raises(PolicyFileError):
            init_database(actor="ops")
        tests_file.write_text("anonymous, GET, /admin/, deny\n")
        with app.app_context():
            init_database(actor="ops")
            assert policy_tests.stored() != []
    finally:
        dispose(app)
