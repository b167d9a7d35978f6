"""Migrations on SQLite and PostgreSQL: from empty, from release 0.1.0, no drift, one line.

Runs once per backend (``tests/integration/conftest.py``); each test has its own database.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask

from service import create_app
from service import migrations
from service.passwords import Passwords
from tests.conftest import AuthActions
from tests.conftest import Backend
from tests.conftest import app_config
from tests.conftest import dispose

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "schema"
OLD_USER = "old-timer@example.com"
OLD_PASSWORD = "old-timer-password-1"
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)


@pytest.fixture
def engine(tmp_path: Path, database: Backend) -> Iterator[sa.Engine]:
    """An engine on this test's empty database."""
    made = sa.create_engine(database.url(tmp_path))
    yield made
    made.dispose()


def drift(engine: sa.Engine) -> list[object]:
    """What autogenerate would change to make the database equal the models."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, migrations.target_metadata()))


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def revision_of(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return migrations.current(conn)


def load_v0(engine: sa.Engine) -> None:
    """Create the schema release 0.1.0's ``db init`` made (fixture dumped from it)."""
    script = (SCHEMAS / f"v0-{engine.dialect.name}.sql").read_text(encoding="utf-8")
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    with engine.begin() as conn:
        for statement in body.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)


def fill_v0(engine: sa.Engine) -> str:
    """Rows as a 0.1.0 deployment holds them: a policy, an account, audit, a failure."""
    hashed = Passwords(1, 8, 1).hash(OLD_PASSWORD)  # the test app's cheap argon2 costs
    rows = [
        ("p", "anonymous", "/login", "GET|POST", "allow"),
        ("p", "user", "/", "GET", "allow"),
        ("p", "user", "/logout", "GET|POST", "allow"),
        ("p", "user", "/reports/*", "GET", "allow"),
        ("p", "admin", "/admin/*", ".*", "allow"),
        ("g", "user", "anonymous", None, None),
        ("g", OLD_USER, "user", None, None),
    ]
    with engine.begin() as conn:
        for ptype, v0, v1, v2, v3 in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) VALUES (:p, :a, :b, :c, :d)"
                ),
                {"p": ptype, "a": v0, "b": v1, "c": v2, "d": v3},
            )
        conn.execute(
            sa.text(
                "INSERT INTO policy_revision (id, revision, changed_at, accounts) "
                "VALUES (1, 7, :at, 2)"
            ),
            {"at": WHEN},
        )
        conn.execute(
            sa.text(
                "INSERT INTO users (email, password_hash, active, session_token, created_at) "
                "VALUES (:e, :h, :a, 'old-token', :at)"
            ),
            {"e": OLD_USER, "h": hashed, "a": True, "at": WHEN},
        )
        conn.execute(
            sa.text(
                "INSERT INTO audit_log (at, actor, source, action, added, removed, forced, "
                "revision, detail) VALUES (:at, 'cli:ops', 'cli', 'policy.init', '[]', '[]', "
                ":f, 7, 'old entry')"
            ),
            {"at": WHEN, "f": False},
        )
        conn.execute(
            sa.text("INSERT INTO login_failures (key, at) VALUES ('addr:10.0.0.9', :at)"),
            {"at": WHEN},
        )
    return hashed


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the 0.1.0 tables, in id order."""
    with engine.connect() as conn:
        return {
            name: [
                tuple(row)
                for row in conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY id"))  # noqa: S608 - fixed names
            ]
            for name in sorted(migrations.BASELINE_TABLES)
        }


@pytest.fixture
def service_on(tmp_path: Path) -> Iterator[Flask]:
    """The service on this test's database, started before anything was upgraded."""
    app = create_app(app_config(tmp_path))
    yield app
    dispose(app)


# -- from empty ---------------------------------------------------------------------------


def test_upgrade_of_an_empty_database_gives_the_models_schema_with_no_drift(
    engine: sa.Engine,
) -> None:
    assert drift(engine)  # the check sees a difference when there is one
    report = migrations.upgrade(engine)
    assert (report.before, report.after, report.adopted) == (None, migrations.head(), False)
    assert drift(engine) == []
    # Every table of the models (later revisions add to the baseline's), nothing else.
    expected = set(migrations.target_metadata().tables) | {"alembic_version"}
    assert tables(engine) == expected >= migrations.BASELINE_TABLES
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT id, revision, accounts FROM policy_revision")).all()
    assert row == [(1, 0, 0)]


def test_a_second_upgrade_changes_nothing(engine: sa.Engine) -> None:
    migrations.upgrade(engine)
    before = snapshot(engine)
    report = migrations.upgrade(engine)
    assert not report.changed
    assert report.before == report.after == migrations.head()
    assert snapshot(engine) == before


def test_concurrent_upgrades_of_one_empty_database_take_turns(
    tmp_path: Path, database: Backend
) -> None:
    """Several instances started at once must not trip over each other's CREATE TABLE."""
    url = database.url(tmp_path)
    engines = [sa.create_engine(url, connect_args=_wait_for_locks(url)) for _ in range(3)]
    results: list[object] = [None] * len(engines)

    def run(i: int) -> None:
        try:
            results[i] = migrations.upgrade(engines[i])
        except Exception as e:  # noqa: BLE001 - the assertion below shows which one failed
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert all(isinstance(r, migrations.UpgradeReport) for r in results), results
        created = [r for r in results if r.before is None]  # type: ignore[union-attr]
        assert len(created) == 1, results
        assert drift(engines[0]) == []
    finally:
        for made in engines:
            made.dispose()


def _wait_for_locks(url: str) -> dict[str, object]:
    return {"timeout": 30} if url.startswith("sqlite") else {}


# -- from release 0.1.0 -------------------------------------------------------------------


def test_a_v0_database_is_adopted_keeps_every_row_and_ends_without_drift(
    engine: sa.Engine,
) -> None:
    load_v0(engine)
    fill_v0(engine)
    before = snapshot(engine)
    assert revision_of(engine) is None

    report = migrations.upgrade(engine)

    assert report.adopted and report.before is None and report.after == migrations.head()
    assert revision_of(engine) == migrations.head()
    after = snapshot(engine)
    # 0002 adds users.verified_at (existing accounts verified at their creation time).
    after["users"] = [row[:-1] for row in after["users"]]
    assert after == before
    assert drift(engine) == []


def test_db_init_on_a_v0_database_keeps_its_policy_and_its_accounts_log_in(
    engine: sa.Engine, service_on: Flask
) -> None:
    load_v0(engine)
    fill_v0(engine)
    rules_before = snapshot(engine)["casbin_rule"]
    runner = service_on.test_cli_runner()

    result = runner.invoke(args=["db", "init"])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"Adopted a database made before migrations, rows kept, at revision {migrations.BASELINE}."
    )
    assert "upgraded from empty" not in result.output
    assert "policy table kept as it was" in result.output
    assert snapshot(engine)["casbin_rule"] == rules_before  # the default policy not mixed in
    authz = service_on.extensions["authz"]
    assert authz.revision == 7
    client = service_on.test_client()
    assert AuthActions(client).login(OLD_USER, OLD_PASSWORD).status_code == 302
    assert client.get("/").status_code == 200
    assert client.get("/admin/").status_code == 403  # the old policy, not the default one


def test_a_v0_database_missing_some_tables_gets_them_and_keeps_the_others(
    engine: sa.Engine,
) -> None:
    """A first start of 0.1.0 that stopped half way: the rule table alone, with rows."""
    load_v0(engine)
    with engine.begin() as conn:
        for name in ("audit_log", "login_failures", "users", "policy_revision"):
            conn.exec_driver_sql(f"DROP TABLE {name}")
        conn.execute(
            sa.text("INSERT INTO casbin_rule (ptype, v0, v1) VALUES ('g', 'admin', 'user')")
        )

    report = migrations.upgrade(engine)

    assert not report.adopted and report.after == migrations.head()
    assert snapshot(engine)["casbin_rule"] == [(1, "g", "admin", "user", None, None, None, None)]
    assert drift(engine) == []


# -- the commands -------------------------------------------------------------------------


def test_db_upgrade_then_db_init_on_a_fresh_database(service_on: Flask, engine: sa.Engine) -> None:
    runner = service_on.test_cli_runner()
    first = runner.invoke(args=["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert first.output.strip() == f"Schema upgraded from empty to revision {migrations.head()}."
    assert revision_of(engine) == migrations.head()

    again = runner.invoke(args=["db", "upgrade"])
    assert again.output.strip() == (
        f"Schema already at revision {migrations.head()}; nothing to do."
    )
    current = runner.invoke(args=["db", "current"])
    assert current.output.strip() == f"Schema at revision {migrations.head()} (current)."

    init = runner.invoke(args=["db", "init"])
    assert init.exit_code == 0, init.output
    assert "default policy loaded" in init.output
    assert service_on.test_client().get("/login").status_code == 200


def test_db_current_on_an_empty_database_says_to_upgrade(service_on: Flask) -> None:
    result = service_on.test_cli_runner().invoke(args=["db", "current"])
    assert result.exit_code == 0
    assert "run `db upgrade`" in result.output
    assert "Schema at revision none" in result.output


def test_a_database_newer_than_this_release_is_refused_in_one_line_and_left_alone(
    service_on: Flask, engine: sa.Engine
) -> None:
    """Code rolled back after an upgrade must not guess at a schema it does not know."""
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d'")
    before = snapshot(engine)
    runner = service_on.test_cli_runner()
    for args in (["db", "upgrade"], ["db", "init"], ["db", "current"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.output)
        assert "f00d" in lines[0]
    assert snapshot(engine) == before
    assert revision_of(engine) == "f00d"


def test_an_unknown_target_revision_is_refused_in_one_line(
    service_on: Flask, engine: sa.Engine
) -> None:
    result = service_on.test_cli_runner().invoke(args=["db", "upgrade", "nonsense"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no such revision: 'nonsense'" in lines[0]
    assert tables(engine) == set()  # nothing was created


def test_the_scripts_are_found_from_the_package_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    monkeypatch.chdir(tmp_path)
    assert migrations.LOCATION.is_relative_to(Path(migrations.__file__).parent)
    assert migrations.upgrade(engine).after == migrations.head()
