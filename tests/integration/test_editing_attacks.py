"""The editing layer as an attacker and a racing admin would use it.

Each test here failed once: huge revisions answered 500/503, a removed role assignment's
id passed for a rule on the rule page, a conflict lookup could be made to parse every
row of the audit log, a NUL in the "try" subject answered 503, and an account write and
a deactivation of the same account could deadlock on PostgreSQL.
"""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authz import Change
from authz import Rule
from authz.store import PolicyStore
from service import editing
from service import users
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import bearer
from tests.conftest import csrf_token
from tests.conftest import make_token

HUGE = 10**30
WHO = editing.Who("test", "cli")


@pytest.fixture
def admin(client: FlaskClient, auth: AuthActions) -> FlaskClient:
    auth.login(ADMIN, ADMIN_PASSWORD)
    return client


def _gone(app: Flask) -> Rule:
    rule = Rule.of("p", "user", "/gone", "GET", "allow")
    with app.app_context():
        editing.add(rule, WHO)
        editing.remove(rule.id, WHO, ptype="p")
    return rule


def _form(client: FlaskClient, **values: str) -> dict[str, str]:
    return {"csrf_token": csrf_token(client, "/admin/rules/new"), **values}


def test_rule_edit_of_a_removed_rule_with_a_huge_revision_is_no_500(
    app: Flask, admin: FlaskClient
) -> None:
    rule = _gone(app)
    response = admin.post(
        f"/admin/rules/{rule.id}/edit",
        data=_form(
            admin, revision=str(HUGE), subject="user", path="/x", methods="GET", effect="allow"
        ),
    )
    assert response.status_code < 500


def test_rule_delete_of_a_removed_rule_with_a_huge_revision_is_no_500(
    app: Flask, admin: FlaskClient
) -> None:
    rule = _gone(app)
    response = admin.post(f"/admin/rules/{rule.id}/delete", data=_form(admin, revision=str(HUGE)))
    assert response.status_code < 500


@pytest.mark.parametrize("method", ["put", "delete"])
def test_api_write_of_a_removed_rule_with_a_huge_body_revision_is_no_500(
    app: Flask, client: FlaskClient, method: str
) -> None:
    rule = _gone(app)
    secret = make_token(app)
    body: dict[str, object] = {"revision": HUGE}
    if method == "put":
        body.update(subject="user", path="/y", methods="GET")
    response = getattr(client, method)(
        f"/api/v1/policy/rules/{rule.id}", headers=bearer(secret), json=body
    )
    assert response.status_code < 500


def test_the_rule_page_does_not_take_a_removed_role_assignment_for_a_rule(
    app: Flask, admin: FlaskClient
) -> None:
    """editing.find(id, "p") refuses a g row's id; the 'gone' path must too."""
    link = Rule.of("g", "someone@example.com", "admin")
    with app.app_context():
        editing.assign("someone@example.com", "admin", WHO)
        editing.unassign("someone@example.com", "admin", WHO)
    response = admin.post(
        f"/admin/rules/{link.id}/edit",
        data=_form(admin, revision="0", subject="user", path="/x", methods="GET", effect="allow"),
    )
    assert response.status_code == 404
    assert "someone@example.com" not in response.get_data(as_text=True)


def test_a_conflict_lookup_reads_a_bounded_amount_of_the_audit_log(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write naming revision 0 and an unknown id must not parse every audited row:
    only single-row edits of the last revisions are read."""
    engine = app.extensions["authz"]
    rows = [Rule.of("p", "user", f"/bulk/{n}", "GET", "allow") for n in range(2000)]
    engine.apply(Change.adding(*rows), actor="t", source="cli")
    engine.apply(Change.removing(*rows), actor="t", source="cli")
    read: list[int] = []
    real = engine.store.audit_since

    def counting(*args: object, **kwargs: object) -> list[object]:
        found = real(*args, **kwargs)  # type: ignore[arg-type]
        read.extend(len(e.added) + len(e.removed) for e in found)
        return found  # type: ignore[return-value]

    monkeypatch.setattr(engine.store, "audit_since", counting)
    secret = make_token(app)
    url = f"/api/v1/policy/rules/{rows[0].id}"
    body = {"subject": "user", "path": "/y", "methods": "GET", "revision": 0}
    response = client.put(url, headers=bearer(secret), json=body)
    assert response.status_code == 404  # removed by a bulk change: not a row edit
    # The two 2,000-row changes are never parsed; small edits (the setup's) may be.
    assert read and max(read) < 100, read


def test_the_editor_try_box_answers_a_nul_in_the_subject_as_a_bad_input(
    app: Flask, admin: FlaskClient
) -> None:
    """params.subject lets a NUL through; PostgreSQL then refuses the account lookup (503)."""
    response = admin.get("/admin/try", query_string={"subject": "a\x00@b.c", "path": "/"})
    assert response.status_code < 500


def test_password_set_and_deactivation_of_one_account_do_not_deadlock(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = PolicyStore.accounts_changed.__func__  # type: ignore[attr-defined]

    def slow(cls, session):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "A":
            time.sleep(1.0)  # the account row is written; the revision row is next
        return real(cls, session)

    monkeypatch.setattr(PolicyStore, "accounts_changed", classmethod(slow))
    results: dict[str, object] = {}

    def a() -> None:
        with app.app_context():
            try:
                users.set_password(USER, "another-password-9", actor="a", source="cli")
                results["A"] = "ok"
            except Exception as e:  # noqa: BLE001
                results["A"] = repr(e)[:200]

    def b() -> None:
        time.sleep(0.3)
        with app.app_context():
            try:
                users.set_active(USER, False, actor="b", source="cli")
                results["B"] = "ok"
            except Exception as e:  # noqa: BLE001
                results["B"] = repr(e)[:200]

    ta, tb = threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")
    ta.start()
    tb.start()
    ta.join(30)
    tb.join(30)
    assert results == {"A": "ok", "B": "ok"}, results
