"""First-run setup: the schema (by migration), the default policy, the first admin. Idempotent."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import current_app

from authz import csvio
from authz import expectations
from authz.engine import Change
from service import migrations
from service import users
from service.extensions import db


@dataclass(frozen=True)
class InitReport:
    """What an init did."""

    policy_rows: int
    admin_email: str | None
    admin_password: str | None  # set only when generated, to be shown once
    schema: migrations.UpgradeReport | None = None
    #: Something the operator should act on (printed in yellow).
    note: str | None = None


def upgrade_database(revision: str = "head") -> migrations.UpgradeReport:
    """Bring the app's database to the schema the code expects (or to ``revision``).

    Then reload the policy, so a service started before the tables existed serves at once.
    """
    report = migrations.upgrade(db.engine, revision)
    users.engine().load()
    return report


def init_database(
    *, admin_email: str = "", admin_password: str = "", create_admin: bool = False, actor: str
) -> InitReport:
    """Upgrade the schema; load the default policy into an empty table; add an admin.

    :param create_admin: make an admin (email default ``admin@localhost``, generated
        password) when no active user can open the policy editor.

    An admin is created only when no active, verified account can open the policy
    editor, and only as a new account: an existing one is never changed here.
    """
    settings = current_app.config["AUTHZ"]
    engine = users.engine()
    explicit = admin_email or settings.admin_email
    if explicit:
        users.normalize_email(explicit)  # refuse a bad email before changing anything
    if admin_password:
        users.check_password(admin_password)  # and a weak password, even if unused
    schema = upgrade_database()
    rows = 0
    if not engine.rules():
        policy = csvio.read_file(settings.default_policy, engine.model)
        # Read before anything is written: a bad tests file must not leave a policy that
        # a second init would find and never store the tests beside.
        shipped = expectations.read_file(settings.default_tests) if settings.default_tests else None
        applied = engine.apply(
            Change(add=policy.rules),
            actor=actor,
            source="cli",
            action="policy.init",
            detail=settings.default_policy,
        )
        rows = len(applied.added)
        if shipped is not None and not engine.expectations():
            # Promises the default policy keeps, so the first edits are checked too.
            engine.change_expectations(
                shipped.expectations,
                actor=actor,
                source="cli",
                action="tests.init",
                detail=settings.default_tests,
            )
    email = (admin_email or settings.admin_email).strip().lower()
    password = admin_password or settings.admin_password
    if not email and not create_admin:
        return InitReport(rows, None, None, schema)
    # Only a database where nobody can open the policy editor gets a first admin. An
    # existing account is never reactivated or re-granted here: an admin's revocation
    # must survive a restart (recovery is `users recover-admin`, audited).
    if _has_admin():
        return InitReport(rows, None, None, schema)
    email = email or "admin@localhost"
    if users.get(email) is not None:
        return InitReport(
            rows,
            None,
            None,
            schema,
            note=(
                f"no active account can open the policy editor, and {email} exists: it is "
                f"left as it is (run `users recover-admin {email}` to make it an admin)"
            ),
        )
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    users.create(
        email,
        password,
        roles=[settings.admin_role],
        actor=actor,
        source="cli",
        action="user.create-admin",
    )
    return InitReport(rows, email, generated, schema)


def _has_admin() -> bool:
    engine = users.engine()
    guard = engine.guard
    if guard is None:
        return False
    with engine.store.transaction() as session:
        subjects = list(users.active_subjects(session))
    return bool(guard.holders(engine.snapshot, subjects))
