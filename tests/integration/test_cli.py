"""The command line: db, users, roles and policy groups, through Flask's CLI runner.

Every command is run for success and for failure: the exit status, a one-line message,
never a traceback, and the effect (or the absence of one) seen through the app itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

from authz import AuditEntry
from authz import Change
from authz import PolicyEngine
from authz import Rule
from authz import csvio
from service import create_app
from service import users
from service.cli import cli
from service.config import ROOT
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import app_config
from tests.conftest import dispose
from tests.integration import mailbox

DATA = Path(__file__).resolve().parents[1] / "data"
DEFAULT_POLICY = ROOT / "policies" / "default.csv"
NEW = "new@example.com"
NEW_PASSWORD = "new-password-1"
LOCKOUT = "refused: after this change no active user could GET /admin/"


# -- helpers ----------------------------------------------------------------------------


def invoke(runner: FlaskCliRunner, *args: str, input: str | None = None) -> Result:
    """Run one command as an operator would."""
    return runner.invoke(args=list(args), input=input)


def assert_clean(result: Result) -> None:
    """No traceback, and no exception other than Click's own exit."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}"
    )


def assert_ok(result: Result) -> str:
    """The command succeeded cleanly; return its output."""
    assert_clean(result)
    assert result.exit_code == 0, result.output
    return result.output


def error_line(result: Result) -> str:
    """The command failed cleanly with exactly one ``Error: ...`` line; return that line."""
    assert_clean(result)
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{result.output}"
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


def decided(result: Result) -> str:
    """A ``policy check`` ran cleanly, exiting 0 for allow and 1 for deny; return its output."""
    assert_clean(result)
    last = result.output.splitlines()[-1] if result.output.strip() else ""
    verdict = last.split(":")[0].strip()
    assert verdict in ("allow", "deny"), result.output
    assert result.exit_code == (0 if verdict == "allow" else 1), result.output
    return result.output


def engine_of(app: Flask) -> PolicyEngine:
    engine: PolicyEngine = app.extensions["authz"]
    engine.refresh()
    return engine


def audit(app: Flask) -> list[AuditEntry]:
    """Every audit entry, newest first."""
    return engine_of(app).store.audit_entries(limit=100_000)


def rules(app: Flask) -> list[Rule]:
    """The stored rules, sorted (so two policies compare as sets, duplicates kept)."""
    return sorted(engine_of(app).rules())


def account(app: Flask, email: str) -> users.User | None:
    with app.app_context():
        return users.get(email)


def state(app: Flask) -> dict[str, Any]:
    """Everything a command may change: rules, revision, audit log, accounts."""
    engine = engine_of(app)
    with app.app_context():
        accounts = [
            (u.email, u.active, u.password_hash, u.session_token) for u in users.list_users()
        ]
    return {
        "rules": sorted(engine.rules()),
        "revision": engine.revision,
        "audit": len(engine.store.audit_entries(limit=100_000)),
        "accounts": accounts,
    }


def read_policy(app: Flask, path: Path) -> list[Rule]:
    return sorted(csvio.read_file(path, engine_of(app).model).rules)


def current_policy_text(runner: FlaskCliRunner) -> str:
    result = invoke(runner, "policy", "export")
    assert_ok(result)
    return result.stdout


@pytest.fixture
def fresh_app(tmp_path: Path) -> Iterator[Flask]:
    """An app on a database nobody has initialised yet."""
    folder = tmp_path / "fresh"
    folder.mkdir()
    app = create_app(app_config(folder))
    yield app
    dispose(app)


# -- db init ----------------------------------------------------------------------------


def test_db_init_on_a_fresh_database_loads_the_default_policy_and_creates_the_admin(
    fresh_app: Flask,
) -> None:
    runner = fresh_app.test_cli_runner()
    result = invoke(
        runner,
        "db",
        "init",
        "--admin-email",
        "Root@Example.com",
        "--admin-password",
        "root-password-1",
    )
    default_rules = read_policy(fresh_app, DEFAULT_POLICY)
    out = assert_ok(result)
    assert f"default policy loaded ({len(default_rules)} rows)" in out
    assert "Admin account: root@example.com" in out
    assert "shown once" not in out  # the password was given, nothing to show

    expected = sorted([*default_rules, Rule.of("g", "root@example.com", "admin")])
    assert rules(fresh_app) == expected
    root = account(fresh_app, "root@example.com")
    assert root is not None and root.active
    assert "admin" in engine_of(fresh_app).roles_for("root@example.com")
    assert [e.action for e in audit(fresh_app)] == ["user.create-admin", "policy.init"]

    client = fresh_app.test_client()
    assert AuthActions(client).login("root@example.com", "root-password-1").status_code == 302
    assert client.get("/admin/").status_code == 200

    before = state(fresh_app)
    again = invoke(
        runner,
        "db",
        "init",
        "--admin-email",
        "root@example.com",
        "--admin-password",
        "root-password-1",
    )
    assert "policy table kept as it was" in assert_ok(again)
    assert state(fresh_app) == before


def test_db_init_without_an_admin_on_a_fresh_database_only_loads_the_policy(
    fresh_app: Flask,
) -> None:
    runner = fresh_app.test_cli_runner()
    out = assert_ok(invoke(runner, "db", "init"))
    assert "default policy loaded" in out
    assert "Admin account" not in out
    assert rules(fresh_app) == read_policy(fresh_app, DEFAULT_POLICY)
    before = state(fresh_app)
    assert before["accounts"] == []
    assert "policy table kept as it was" in assert_ok(invoke(runner, "db", "init"))
    assert state(fresh_app) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="no-options"),
        pytest.param(["--admin-email", ADMIN, "--admin-password", ADMIN_PASSWORD], id="same-admin"),
        pytest.param(["--admin-email", "  Admin@Example.COM "], id="same-admin-other-spelling"),
    ],
)
def test_db_init_twice_changes_nothing(app: Flask, runner: FlaskCliRunner, args: list[str]) -> None:
    before = state(app)
    for _ in range(2):
        out = assert_ok(invoke(runner, "db", "init", *args))
        assert "policy table kept as it was" in out
        assert "shown once" not in out
        assert state(app) == before


def test_db_init_keeps_a_non_empty_policy_table(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    custom = tmp_path / "custom.csv"
    custom.write_text(
        "p, admin, /admin/*, .*, allow\np, user, /, GET, allow\n"
        "g, admin, user\ng, admin@example.com, admin\ng, user@example.com, user\n",
        encoding="utf-8",
    )
    assert_ok(invoke(runner, "policy", "load", str(custom), "--replace"))
    before = state(app)
    assert before["rules"] == read_policy(app, custom)
    assert "policy table kept as it was" in assert_ok(invoke(runner, "db", "init"))
    assert state(app) == before  # the default policy was not merged back in


# db init's first admin (created only when nobody can open the editor, never a
# promotion of an existing account): tests/integration/test_bootstrap.py.


# -- users ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "stdin"),
    [
        pytest.param(["--password", NEW_PASSWORD], None, id="password-option"),
        pytest.param([], NEW_PASSWORD + "\n", id="password-on-stdin"),
    ],
)
def test_users_create_gives_the_default_role(
    app: Flask, runner: FlaskCliRunner, auth: AuthActions, options: list[str], stdin: str | None
) -> None:
    count = len(audit(app))
    result = invoke(runner, "users", "create", NEW, *options, input=stdin)
    assert assert_ok(result).strip() == f"Created {NEW} with roles: user."
    user = account(app, NEW)
    assert user is not None and user.active
    assert Rule.of("g", NEW, "user") in engine_of(app).rules()
    assert engine_of(app).roles_for(NEW) == ["anonymous", "user"]
    entries = audit(app)
    assert len(entries) == count + 1
    assert entries[0].action == "user.create" and entries[0].source == "cli"
    assert entries[0].actor.startswith("cli")
    assert entries[0].added == (Rule.of("g", NEW, "user"),)
    assert auth.login(NEW, NEW_PASSWORD).status_code == 302


def test_users_create_with_roles_and_odd_spelling(app: Flask, runner: FlaskCliRunner) -> None:
    result = invoke(
        runner,
        "users",
        "create",
        "  New@Example.COM ",
        "--password",
        "0123456789",
        "--role",
        "admin",
        "--role",
        "user",
    )
    assert assert_ok(result).strip() == f"Created {NEW} with roles: admin, user."
    assert account(app, NEW) is not None
    with app.app_context():
        assert users.direct_roles(NEW) == ["admin", "user"]
    assert "admin" in engine_of(app).roles_for(NEW)


@pytest.mark.parametrize(
    ("email", "options", "stdin", "message"),
    [
        pytest.param(
            USER,
            ["--password", NEW_PASSWORD],
            None,
            "an account with this email already exists",
            id="duplicate",
        ),
        pytest.param(
            "USER@Example.com",
            ["--password", NEW_PASSWORD],
            None,
            "an account with this email already exists",
            id="duplicate-other-case",
        ),
        pytest.param(
            USER,
            ["--password", NEW_PASSWORD, "--role", "admin"],
            None,
            "an account with this email already exists",
            id="duplicate-with-role",
        ),
        pytest.param(
            "not-an-email",
            ["--password", NEW_PASSWORD],
            None,
            "enter a valid email address",
            id="invalid-email",
        ),
        pytest.param(
            "a b@example.com",
            ["--password", NEW_PASSWORD],
            None,
            "an email address cannot contain spaces or control characters",
            id="email-with-space",
        ),
        pytest.param(
            NEW,
            ["--password", "012345678"],
            None,
            "the password must have at least 10 characters",
            id="password-9-chars",
        ),
        pytest.param(
            NEW,
            [],
            "short\n",
            "the password must have at least 10 characters",
            id="short-password-on-stdin",
        ),
        pytest.param(NEW, [], None, "no password given", id="no-password"),
        pytest.param(
            NEW,
            ["--password", NEW_PASSWORD, "--role", "editor"],
            None,
            "no role 'editor' in the policy (known: admin, anonymous, user)",
            id="unknown-role",
        ),
        pytest.param(
            NEW,
            ["--password", NEW_PASSWORD, "--role", "admin", "--role", "editor"],
            None,
            "no role 'editor'",
            id="one-unknown-role-of-two",
        ),
        pytest.param(
            NEW,
            ["--password", NEW_PASSWORD, "--role", "Admins"],
            None,
            "'Admins' is not a role name",
            id="bad-role-name",
        ),
        pytest.param(
            NEW,
            ["--password", NEW_PASSWORD, "--role", "x@example.com"],
            None,
            "is not a role name",
            id="email-as-role",
        ),
    ],
)
def test_users_create_failures_change_nothing(
    app: Flask,
    runner: FlaskCliRunner,
    email: str,
    options: list[str],
    stdin: str | None,
    message: str,
) -> None:
    before = state(app)
    line = error_line(invoke(runner, "users", "create", email, *options, input=stdin))
    assert message in line
    assert state(app) == before
    assert "admin" not in engine_of(app).roles_for(USER)


def test_users_list_shows_state_and_direct_roles(app: Flask, runner: FlaskCliRunner) -> None:
    out = assert_ok(invoke(runner, "users", "list"))
    assert out.splitlines() == [
        f"{ADMIN}\tactive\tadmin",
        f"{USER}\tactive\tuser",
        "2 account(s).",
    ]
    assert_ok(invoke(runner, "users", "deactivate", USER))
    assert f"{USER}\tinactive\tuser" in assert_ok(invoke(runner, "users", "list")).splitlines()


def test_users_deactivate_ends_sessions_and_activate_lets_back_in(
    app: Flask, runner: FlaskCliRunner, auth: AuthActions
) -> None:
    assert auth.login(USER, USER_PASSWORD).status_code == 302
    assert auth.client.get("/").status_code == 200

    out = assert_ok(invoke(runner, "users", "deactivate", "User@Example.com"))
    assert out.strip() == f"Deactivated {USER}; its sessions are ended."
    user = account(app, USER)
    assert user is not None and user.active is False
    entry = audit(app)[0]
    assert (entry.action, entry.detail, entry.forced) == ("user.deactivate", USER, False)
    # The live session is dead: the next request is anonymous and sent to the login page.
    response = auth.client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert auth.login(USER, USER_PASSWORD).status_code == 401

    out = assert_ok(invoke(runner, "users", "activate", USER))
    assert out.strip() == f"Activated {USER}."
    user = account(app, USER)
    assert user is not None and user.active is True
    assert audit(app)[0].action == "user.activate"
    assert auth.login(USER, USER_PASSWORD).status_code == 302


def test_deactivating_the_only_admin_is_refused_unless_forced(
    app: Flask, runner: FlaskCliRunner
) -> None:
    before = state(app)
    line = error_line(invoke(runner, "users", "deactivate", ADMIN))
    assert LOCKOUT in line
    assert state(app) == before
    admin = account(app, ADMIN)
    assert admin is not None and admin.active

    out = assert_ok(invoke(runner, "users", "deactivate", ADMIN, "--force"))
    assert f"Deactivated {ADMIN}" in out
    admin = account(app, ADMIN)
    assert admin is not None and admin.active is False
    entry = audit(app)[0]
    assert len(audit(app)) == before["audit"] + 1
    assert (entry.action, entry.detail, entry.forced) == ("user.deactivate", ADMIN, True)


def test_deactivating_an_admin_is_allowed_while_another_admin_remains(
    app: Flask, runner: FlaskCliRunner
) -> None:
    assert_ok(invoke(runner, "roles", "add", USER, "admin"))
    assert_ok(invoke(runner, "users", "deactivate", ADMIN))
    admin = account(app, ADMIN)
    assert admin is not None and admin.active is False
    assert audit(app)[0].forced is False
    # Now USER is the last one who can open the editor.
    assert LOCKOUT in error_line(invoke(runner, "users", "deactivate", USER))


@pytest.mark.parametrize(
    ("options", "stdin"),
    [
        pytest.param(["--password", "brand-new-password"], None, id="password-option"),
        pytest.param([], "brand-new-password\n", id="password-on-stdin"),
    ],
)
def test_users_set_password(
    app: Flask, runner: FlaskCliRunner, auth: AuthActions, options: list[str], stdin: str | None
) -> None:
    assert auth.login(USER, USER_PASSWORD).status_code == 302
    assert auth.client.get("/").status_code == 200

    result = invoke(runner, "users", "set-password", USER, *options, input=stdin)
    # The last line (the development mail backend logs the notice above it).
    assert assert_ok(result).strip().splitlines()[-1] == (
        f"Password changed for {USER}; its sessions are ended and its owner told."
    )
    entry = audit(app)[0]
    assert (entry.action, entry.detail) == ("user.password", USER)
    notice = mailbox.to(app, USER)[-1]
    assert notice["Subject"] == "Your password was changed"
    assert entry.actor in notice.get_content()
    assert auth.client.get("/").status_code == 302  # the old session ended
    assert auth.login(USER, USER_PASSWORD).status_code == 401
    assert auth.login(USER, "brand-new-password").status_code == 302


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        pytest.param(
            ["activate", "nobody@example.com"],
            None,
            "no account with email 'nobody@example.com'",
            id="activate-unknown",
        ),
        pytest.param(
            ["activate", "not-an-email"],
            None,
            "no account with email 'not-an-email'",
            id="activate-invalid-email",
        ),
        pytest.param(
            ["deactivate", "Nobody@Example.com"],
            None,
            "no account with email 'nobody@example.com'",
            id="deactivate-unknown",
        ),
        pytest.param(
            ["deactivate", "nobody@example.com", "--force"],
            None,
            "no account with email 'nobody@example.com'",
            id="deactivate-unknown-forced",
        ),
        pytest.param(["deactivate", ADMIN], None, LOCKOUT, id="deactivate-only-admin"),
        pytest.param(
            ["set-password", "nobody@example.com", "--password", NEW_PASSWORD],
            None,
            "no account with email 'nobody@example.com'",
            id="set-password-unknown",
        ),
        pytest.param(
            ["set-password", "nobody@example.com"],
            None,
            "no account with email 'nobody@example.com'",
            id="set-password-unknown-before-asking",
        ),
        pytest.param(
            ["set-password", USER, "--password", "012345678"],
            None,
            "the password must have at least 10 characters",
            id="set-password-short",
        ),
        pytest.param(
            ["set-password", USER],
            "short\n",
            "the password must have at least 10 characters",
            id="set-password-short-on-stdin",
        ),
        pytest.param(
            ["set-password", USER], None, "no password given", id="set-password-none-given"
        ),
    ],
)
def test_users_command_failures_change_nothing(
    app: Flask, runner: FlaskCliRunner, args: list[str], stdin: str | None, message: str
) -> None:
    before = state(app)
    assert message in error_line(invoke(runner, "users", *args, input=stdin))
    assert state(app) == before


# -- roles ------------------------------------------------------------------------------


def test_roles_list_shows_direct_members(app: Flask, runner: FlaskCliRunner) -> None:
    assert assert_ok(invoke(runner, "roles", "list")).splitlines() == [
        f"admin\t{ADMIN}",
        "anonymous\tuser",
        f"user\tadmin, {USER}",
        "3 role(s).",
    ]
    assert_ok(invoke(runner, "roles", "add", USER, "admin"))
    assert f"admin\t{ADMIN}, {USER}" in assert_ok(invoke(runner, "roles", "list")).splitlines()


def test_roles_add_gives_the_role_once(app: Flask, runner: FlaskCliRunner) -> None:
    count = len(audit(app))
    out = assert_ok(invoke(runner, "roles", "add", USER, "admin"))
    assert out.strip() == f"{USER} now has role admin."
    assert "admin" in engine_of(app).roles_for(USER)
    entry = audit(app)[0]
    assert (entry.action, entry.added) == ("role.assign", (Rule.of("g", USER, "admin"),))
    assert len(audit(app)) == count + 1

    before = state(app)
    again = assert_ok(invoke(runner, "roles", "add", USER, "admin"))
    assert again.strip() == f"{USER} already has role admin; nothing changed."
    assert state(app) == before


def test_roles_remove_takes_the_role_away(
    app: Flask, runner: FlaskCliRunner, auth: AuthActions
) -> None:
    assert_ok(invoke(runner, "roles", "add", USER, "admin"))
    out = assert_ok(invoke(runner, "roles", "remove", USER, "admin"))
    assert out.strip() == f"{USER} no longer has role admin."
    assert "admin" not in engine_of(app).roles_for(USER)
    assert Rule.of("g", USER, "admin") not in engine_of(app).rules()
    entry = audit(app)[0]
    assert (entry.action, entry.removed, entry.forced) == (
        "role.remove",
        (Rule.of("g", USER, "admin"),),
        False,
    )
    assert auth.login(USER, USER_PASSWORD).status_code == 302
    assert auth.client.get("/admin/").status_code == 403


def test_roles_remove_works_on_a_row_whose_account_does_not_exist(
    app: Flask, runner: FlaskCliRunner
) -> None:
    assert_ok(invoke(runner, "policy", "load", str(DATA / "good_quoted.csv")))
    row = Rule.of("g", "alice@example.com", "admin")
    assert row in engine_of(app).rules()
    listed = assert_ok(invoke(runner, "roles", "list")).splitlines()
    assert f"admin\t{ADMIN}, alice@example.com" in listed
    out = assert_ok(invoke(runner, "roles", "remove", "alice@example.com", "admin"))
    assert out.strip() == "alice@example.com no longer has role admin."
    assert row not in engine_of(app).rules()


def test_removing_the_last_admin_role_is_refused_unless_forced(
    app: Flask, runner: FlaskCliRunner
) -> None:
    before = state(app)
    assert LOCKOUT in error_line(invoke(runner, "roles", "remove", ADMIN, "admin"))
    assert state(app) == before

    assert_ok(invoke(runner, "roles", "remove", ADMIN, "admin", "--force"))
    assert "admin" not in engine_of(app).roles_for(ADMIN)
    entry = audit(app)[0]
    assert (entry.action, entry.forced) == ("role.remove", True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["add", "User@Example.com", "admin"],
            "member: write it as user@example.com",
            id="add-email-not-lower-case",
        ),
        pytest.param(
            ["add", " user@example.com", "admin"],
            "member: write it as user@example.com",
            id="add-email-with-space",
        ),
        pytest.param(
            ["remove", "User@Example.com", "user"],
            "subject: write it as user@example.com",
            id="remove-email-not-lower-case",
        ),
        pytest.param(["add", USER, "editor"], "no role 'editor'", id="add-unknown-role"),
        pytest.param(["add", USER, "Admins"], "'Admins' is not a role name", id="add-bad-role"),
        pytest.param(
            ["add", USER, "ad min"], "'ad min' is not a role name", id="add-role-with-space"
        ),
        pytest.param(["add", USER, ADMIN], "is not a role name", id="add-user-as-role"),
        pytest.param(
            ["add", "admin", "admin"], "cannot inherit from itself", id="add-role-to-itself"
        ),
        pytest.param(["remove", ADMIN, "admin"], LOCKOUT, id="remove-last-admin"),
    ],
)
def test_roles_command_failures_change_nothing(
    app: Flask, runner: FlaskCliRunner, args: list[str], message: str
) -> None:
    before = state(app)
    assert message in error_line(invoke(runner, "roles", *args))
    assert state(app) == before


# -- policy load ------------------------------------------------------------------------


SEVERAL_BAD_LINES = (
    "p, user, /reports/*, GET, allow\n"  # 1: good, and new
    "p, user, /broken\n"  # 2: too few values
    "g, user@example.com, Admins\n"  # 3: bad role name
    "# a comment\n"  # 4
    "p, user, /search, GET|(, allow\n"  # 5: regex does not compile
    "g, user@example.com, admin\n"  # 6: good, and new
    "x, user, /, GET, allow\n"  # 7: unknown rule type
    "p, user, /reports/*, GET\n"  # 8: duplicates line 1 once normalized
)


@pytest.mark.parametrize("mode", [[], ["--merge"], ["--replace"], ["--replace", "--force"]])
def test_policy_load_reports_every_bad_line_and_changes_nothing(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, mode: list[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(SEVERAL_BAD_LINES, encoding="utf-8")
    before = state(app)
    result = invoke(runner, "policy", "load", str(bad), *mode)
    assert_clean(result)
    assert result.exit_code == 1
    out = result.output
    assert out.startswith(f"Error: {bad}: 5 bad line(s), nothing was changed")
    reported = [int(n) for n in re.findall(r"^\s+line (\d+):", out, re.M)]
    assert reported == [2, 3, 5, 7, 8]
    assert "duplicates line 1" in out
    assert state(app) == before


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("bad_arity.csv", [3]),
        ("bad_duplicate.csv", [4]),
        ("bad_empty_subject.csv", [2]),
        ("bad_quote_then_more.csv", [1, 3]),  # a bad quote hides no later line
        ("bad_regex.csv", [2]),
        ("bad_role_name.csv", [3]),
        ("bad_three_lines.csv", [3, 5, 7]),
        ("bad_unknown_ptype.csv", [3]),
        ("bad_unterminated_quote.csv", [2]),
        ("bad_unterminated_quote_midfile.csv", [2]),  # the line with the quote
    ],
)
def test_policy_load_bad_data_files(
    app: Flask, runner: FlaskCliRunner, name: str, lines: list[int]
) -> None:
    before = state(app)
    result = invoke(runner, "policy", "load", str(DATA / name), "--replace", "--force")
    assert_clean(result)
    assert result.exit_code == 1
    assert f"{len(lines)} bad line(s), nothing was changed" in result.output
    assert [int(n) for n in re.findall(r"^\s+line (\d+):", result.output, re.M)] == lines
    assert state(app) == before


def test_policy_load_of_a_missing_file_fails_and_changes_nothing(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.csv"
    before = state(app)
    result = invoke(runner, "policy", "load", str(missing))
    assert_clean(result)
    assert result.exit_code == 1
    assert str(missing) in result.output
    assert "No such file or directory" in result.output
    assert state(app) == before


def test_policy_load_of_a_missing_file_says_so_in_one_line(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.csv"
    line = error_line(invoke(runner, "policy", "load", str(missing)))
    assert str(missing) in line and "No such file or directory" in line
    assert "bad line" not in line


def test_policy_load_of_a_file_that_is_not_utf8(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(b"p, user, /caf\xe9, GET, allow\n")
    before = state(app)
    result = invoke(runner, "policy", "load", str(latin))
    assert_clean(result)
    assert result.exit_code == 1
    assert f"{latin}: not UTF-8 at byte 13 (line 1, column 14)" in result.output
    assert state(app) == before


def _edited_policy(runner: FlaskCliRunner, tmp_path: Path) -> Path:
    """The current policy without the favicon row, plus a reports row."""
    text = current_policy_text(runner)
    assert "p, anonymous, /favicon.ico, GET, allow\n" in text
    text = text.replace("p, anonymous, /favicon.ico, GET, allow\n", "")
    text += "p, user, /reports/*, GET, allow\n"
    path = tmp_path / "edited.csv"
    path.write_text(text, encoding="utf-8")
    return path


#: What a dry run says the reports row gives (the what-if's access lines).
REPORTS_ACCESS = ["  + admin may now GET /reports/*", "  + user may now GET /reports/*"]


@pytest.mark.parametrize(
    ("mode", "diff", "access", "summary"),
    [
        pytest.param(
            ["--replace"],
            ["- p, anonymous, /favicon.ico, GET, allow", "+ p, user, /reports/*, GET, allow"],
            [
                "  - admin may no longer GET /favicon.ico",
                "  - anonymous may no longer GET /favicon.ico",
                "  - user may no longer GET /favicon.ico",
                *REPORTS_ACCESS,
            ],
            "Dry run: would add 1 and remove 1 row(s); nothing changed.",
            id="replace",
        ),
        pytest.param(
            ["--merge"],
            ["+ p, user, /reports/*, GET, allow"],
            REPORTS_ACCESS,
            "Dry run: would add 1 and remove 0 row(s); nothing changed.",
            id="merge",
        ),
        pytest.param(
            [],
            ["+ p, user, /reports/*, GET, allow"],
            REPORTS_ACCESS,
            "Dry run: would add 1 and remove 0 row(s); nothing changed.",
            id="default-is-merge",
        ),
    ],
)
def test_policy_load_dry_run_prints_the_diff_and_changes_nothing(
    app: Flask,
    runner: FlaskCliRunner,
    tmp_path: Path,
    mode: list[str],
    diff: list[str],
    access: list[str],
    summary: str,
) -> None:
    """The diff of rows, then who gains and loses access (the what-if), then a summary."""
    edited = _edited_policy(runner, tmp_path)
    before = state(app)
    result = invoke(runner, "policy", "load", str(edited), *mode, "--dry-run")
    assert_ok(result)
    assert result.stdout.splitlines() == [*diff, "Access:", *access, summary]
    assert state(app) == before


def test_policy_load_dry_run_of_an_identical_file_prints_no_diff(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    same = tmp_path / "same.csv"
    same.write_text(current_policy_text(runner), encoding="utf-8")
    before = state(app)
    result = invoke(runner, "policy", "load", str(same), "--replace", "--dry-run")
    assert_ok(result)
    assert result.stdout.splitlines() == [
        "Dry run: would add 0 and remove 0 row(s); nothing changed."
    ]
    assert state(app) == before


@pytest.mark.parametrize("mode", [["--merge"], []], ids=["merge", "default"])
def test_policy_load_merge_adds_only_missing_rows(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, mode: list[str]
) -> None:
    edited = _edited_policy(runner, tmp_path)
    before = state(app)
    out = assert_ok(invoke(runner, "policy", "load", str(edited), *mode))
    assert f"Loaded {edited} (merge): 1 added, 0 removed" in out
    after = rules(app)
    assert sorted([*before["rules"], Rule.of("p", "user", "/reports/*", "GET", "allow")]) == after
    assert Rule.of("p", "anonymous", "/favicon.ico", "GET", "allow") in after  # kept
    entry = audit(app)[0]
    assert len(audit(app)) == before["audit"] + 1
    assert (entry.action, entry.detail, entry.removed) == ("policy.load.merge", str(edited), ())
    assert entry.added == (Rule.of("p", "user", "/reports/*", "GET", "allow"),)
    assert engine_of(app).revision == before["revision"] + 1
    check = invoke(runner, "policy", "check", USER, "/reports/2024", "GET")
    assert assert_ok(check).strip() == "allow"


def test_policy_load_replace_makes_the_rules_equal_to_the_file(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    edited = _edited_policy(runner, tmp_path)
    before = state(app)
    out = assert_ok(invoke(runner, "policy", "load", str(edited), "--replace"))
    assert f"Loaded {edited} (replace): 1 added, 1 removed" in out
    assert rules(app) == read_policy(app, edited)
    entry = audit(app)[0]
    assert (entry.action, entry.forced) == ("policy.load.replace", False)
    assert entry.removed == (Rule.of("p", "anonymous", "/favicon.ico", "GET", "allow"),)
    assert len(audit(app)) == before["audit"] + 1


def test_policy_load_replace_with_quoted_values(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    text = (DATA / "good_quoted.csv").read_text(encoding="utf-8")
    text += "g, admin@example.com, admin\np, admin, /admin/*, .*, allow\n"
    quoted = tmp_path / "quoted.csv"
    quoted.write_text(text, encoding="utf-8")
    assert_ok(invoke(runner, "policy", "load", str(quoted), "--replace", "--include-assignments"))
    assert rules(app) == read_policy(app, quoted)
    assert Rule.of("p", "user", "/a,b", "GET", "allow") in rules(app)
    assert Rule.of("p", "user", '/say/"hi"', "GET|POST", "deny") in rules(app)


def test_policy_load_replace_that_locks_everyone_out_needs_force(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    # No rule lets the admin role open the editor any more.
    small = tmp_path / "small.csv"
    text = (DATA / "good_small.csv").read_text(encoding="utf-8")
    small.write_text(text.replace("p, admin, /admin/*, .*, allow\n", ""), encoding="utf-8")
    before = state(app)
    assert LOCKOUT in error_line(invoke(runner, "policy", "load", str(small), "--replace"))
    assert state(app) == before

    assert_ok(invoke(runner, "policy", "load", str(small), "--replace", "--force"))
    assigned = [r for r in before["rules"] if r.ptype == "g" and "@" in r.values[0]]
    assert rules(app) == sorted([*read_policy(app, small), *assigned])
    entry = audit(app)[0]
    assert (entry.action, entry.forced) == ("policy.load.replace", True)


def test_policy_export_then_load_replace_round_trips(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    # Start from a policy with awkward values: commas, quotes, an omitted effect.
    assert_ok(invoke(runner, "policy", "load", str(DATA / "good_quoted.csv")))
    assert_ok(invoke(runner, "policy", "load", str(DATA / "good_bom_crlf.csv")))
    original = rules(app)

    exported = tmp_path / "exported.csv"
    out = assert_ok(invoke(runner, "policy", "export", str(exported)))
    assert out.strip() == f"Exported {len(original)} rows to {exported}."
    assert read_policy(app, exported) == original

    # Loading it straight back changes nothing and writes no audit entry.
    before = state(app)
    again = assert_ok(invoke(runner, "policy", "load", str(exported), "--replace"))
    assert "0 added, 0 removed" in again
    assert state(app) == before

    # Drift away from it, then restore it.
    assert_ok(invoke(runner, "roles", "add", USER, "admin"))
    assert_ok(invoke(runner, "roles", "remove", USER, "user"))
    assert_ok(invoke(runner, "users", "create", NEW, "--password", NEW_PASSWORD))
    assert_ok(invoke(runner, "policy", "load", str(DATA / "good_small.csv")))
    assert rules(app) != original
    assert_ok(invoke(runner, "policy", "load", str(exported), "--replace", "--include-assignments"))
    assert rules(app) == original


def test_policy_export_to_stdout_equals_the_file_export(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    assert_ok(invoke(runner, "policy", "load", str(DATA / "good_quoted.csv")))
    exported = tmp_path / "exported.csv"
    assert_ok(invoke(runner, "policy", "export", str(exported)))
    result = invoke(runner, "policy", "export")
    assert_ok(result)
    assert result.stdout == exported.read_text(encoding="utf-8")
    assert result.stdout.endswith("\n")
    assert csvio.parse(result.stdout, engine_of(app).model).rules
    assert sorted(csvio.parse(result.stdout, engine_of(app).model).rules) == rules(app)


def test_policy_export_to_an_unwritable_place_fails_cleanly(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    target = tmp_path / "no-such-dir" / "policy.csv"
    before = state(app)
    line = error_line(invoke(runner, "policy", "export", str(target)))
    assert f"cannot write {target}: No such file or directory" in line
    assert not target.exists()
    assert state(app) == before


# -- policy check -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "path", "method", "verdict", "rule"),
    [
        (USER, "/", "GET", "allow", "p, user, /, GET, allow"),
        (USER, "/", "get", "allow", "p, user, /, GET, allow"),
        (USER, "/logout", "POST", "allow", "p, user, /logout, GET|POST, allow"),
        (USER, "/login", "GET", "allow", "p, anonymous, /login, GET|POST, allow"),
        (ADMIN, "/", "GET", "allow", "p, user, /, GET, allow"),
        (ADMIN, "/admin", "GET", "allow", "p, admin, /admin, GET, allow"),
        (ADMIN, "/admin/users/7", "DELETE", "allow", "p, admin, /admin/*, .*, allow"),
        ("anonymous", "/login", "POST", "allow", "p, anonymous, /login, GET|POST, allow"),
        ("anonymous", "/static/style.css", "GET", "allow", "p, anonymous, /static/*, GET, allow"),
        (USER, "/admin/", "GET", "deny", None),
        (USER, "/", "POST", "deny", None),
        ("anonymous", "/", "GET", "deny", None),
        ("nobody@example.com", "/", "GET", "deny", None),
    ],
)
def test_policy_check(
    runner: FlaskCliRunner, subject: str, path: str, method: str, verdict: str, rule: str | None
) -> None:
    plain = decided(invoke(runner, "policy", "check", subject, path, method))
    assert plain.strip() == verdict

    explained = decided(invoke(runner, "policy", "check", subject, path, method, "--explain"))
    lines = explained.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{verdict}: {subject.lower()} {method.upper()} {path} ")
    if rule is None:
        assert lines[0].endswith("matches no allow rule")
    else:
        assert lines[0].endswith(f"is allowed by rule [{rule}]")


def test_policy_check_explain_names_a_deny_rule(runner: FlaskCliRunner, tmp_path: Path) -> None:
    deny = tmp_path / "deny.csv"
    deny.write_text(
        "p, user, /reports/*, GET, allow\np, user, /reports/secret, GET, deny\n", encoding="utf-8"
    )
    assert_ok(invoke(runner, "policy", "load", str(deny)))
    out = decided(invoke(runner, "policy", "check", USER, "/reports/secret", "GET", "--explain"))
    assert out.strip() == (
        f"deny: {USER} GET /reports/secret is denied by rule [p, user, /reports/secret, GET, deny]"
    )
    assert (
        decided(invoke(runner, "policy", "check", ADMIN, "/reports/secret", "HEAD")).strip()
        == "deny"
    )
    assert decided(invoke(runner, "policy", "check", USER, "/reports/x", "GET")).strip() == "allow"


@pytest.mark.parametrize(
    ("subject", "path", "verdict"),
    [
        (USER, "/", "allow"),
        (USER, "/admin/", "deny"),
        ("anonymous", "/login", "allow"),
        ("anonymous", "/", "deny"),
        (ADMIN, "/admin/", "allow"),
    ],
)
@pytest.mark.parametrize("head", ["HEAD", "head"])
def test_policy_check_decides_head_as_get(
    runner: FlaskCliRunner, subject: str, path: str, verdict: str, head: str
) -> None:
    as_head = decided(invoke(runner, "policy", "check", subject, path, head, "--explain"))
    as_get = decided(invoke(runner, "policy", "check", subject, path, "GET", "--explain"))
    assert as_head == as_get
    assert as_head.startswith(f"{verdict}: {subject} GET {path} ")
    plain = decided(invoke(runner, "policy", "check", subject, path, head))
    assert plain.strip() == verdict


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param("/a/../admin/", "dot segment in the path", id="dotdot"),
        pytest.param("/./admin/", "dot segment in the path", id="dot"),
        pytest.param("/admin/..", "dot segment in the path", id="trailing-dotdot"),
        pytest.param("//admin/", "empty segment ('//') in the path", id="double-slash"),
        pytest.param("/admin//users", "empty segment ('//') in the path", id="inner-double-slash"),
        pytest.param("/admin\\users", "backslash in the path", id="backslash"),
        pytest.param("/admin\x00", "control character in the path", id="nul"),
        pytest.param("admin/", "the path must start with '/'", id="relative"),
        pytest.param("", "the path must start with '/'", id="empty"),
    ],
)
def test_policy_check_refuses_unsafe_paths(
    app: Flask, runner: FlaskCliRunner, path: str, message: str
) -> None:
    before = state(app)
    line = error_line(invoke(runner, "policy", "check", ADMIN, path, "GET"))
    assert message in line
    assert "allow" not in line
    assert error_line(invoke(runner, "policy", "check", ADMIN, path, "GET", "--explain")) == line
    assert state(app) == before


# -- usage errors and an uninitialised database -------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["users", "create"], "Missing argument 'EMAIL'", id="create-no-email"),
        pytest.param(["users", "list", "extra"], "unexpected extra argument", id="list-extra"),
        pytest.param(["users", "deactivate"], "Missing argument 'EMAIL'", id="deactivate-no-email"),
        pytest.param(["roles", "add", USER], "Missing argument 'ROLE'", id="roles-add-no-role"),
        pytest.param(["roles", "list", "x"], "unexpected extra argument", id="roles-list-extra"),
        pytest.param(["policy", "load"], "Missing argument 'FILE'", id="load-no-file"),
        pytest.param(["policy", "load", "."], "is a directory", id="load-directory"),
        pytest.param(["policy", "export", "."], "is a directory", id="export-directory"),
        pytest.param(
            ["policy", "check", USER, "/"], "Missing argument 'METHOD'", id="check-no-method"
        ),
        pytest.param(
            ["db", "init", "--admin-email"], "requires an argument", id="init-option-without-value"
        ),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(
    app: Flask, runner: FlaskCliRunner, args: list[str], message: str
) -> None:
    before = state(app)
    result = invoke(runner, *args)
    assert_clean(result)
    assert result.exit_code == 2
    assert "Error: " in result.output and message in result.output
    assert state(app) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--admin-email", "not-an-email", "--admin-password", NEW_PASSWORD],
            "enter a valid email address",
            id="invalid-email",
        ),
        pytest.param(
            ["--admin-email", NEW, "--admin-password", "012345678"],
            "the password must have at least 10 characters",
            id="short-password",
        ),
    ],
)
def test_db_init_failures(
    app: Flask, runner: FlaskCliRunner, args: list[str], message: str
) -> None:
    before = state(app)
    assert message in error_line(invoke(runner, "db", "init", *args))
    assert state(app) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["users", "create", NEW, "--password", NEW_PASSWORD], id="users-create"),
        pytest.param(["users", "list"], id="users-list"),
        pytest.param(["users", "activate", NEW], id="users-activate"),
        pytest.param(["users", "deactivate", NEW], id="users-deactivate"),
        pytest.param(
            ["users", "set-password", NEW, "--password", NEW_PASSWORD], id="users-set-password"
        ),
        pytest.param(["roles", "list"], id="roles-list"),
        pytest.param(["roles", "add", NEW, "admin"], id="roles-add"),
        pytest.param(["roles", "remove", NEW, "admin"], id="roles-remove"),
        pytest.param(["policy", "load", str(DATA / "good_small.csv")], id="policy-load"),
        pytest.param(["policy", "export"], id="policy-export"),
        pytest.param(["policy", "check", "anonymous", "/", "GET"], id="policy-check"),
    ],
)
def test_commands_before_db_init_fail_with_one_clean_line(
    fresh_app: Flask, args: list[str]
) -> None:
    """An operator who forgot ``db init`` gets a one-line error, not a traceback."""
    error_line(invoke(fresh_app.test_cli_runner(), *args))


# -- the authz console script -------------------------------------------------------------


def _script_env(app: Flask, **extra: str) -> dict[str, str]:
    settings = app.config["AUTHZ"]
    return {
        "AUTHZ_ENV": "testing",
        "AUTHZ_DATABASE_URL": settings.database_url,
        "AUTHZ_SECRET_KEY": "test-secret-key",
        "AUTHZ_INSTANCE_PATH": settings.instance_path,
        "AUTHZ_POLL_INTERVAL": "0",
        "AUTHZ_ARGON2_TIME_COST": "1",
        "AUTHZ_ARGON2_MEMORY_COST": "8",
        "AUTHZ_ARGON2_PARALLELISM": "1",
        **extra,
    }


def test_the_authz_script_has_the_same_groups(app: Flask) -> None:
    runner = CliRunner()
    env = _script_env(app)
    listed = runner.invoke(cli, ["users", "list"], env=env, prog_name="authz")
    assert assert_ok(listed).splitlines()[-1] == "2 account(s)."
    assert f"{USER}\tactive\tuser" in listed.output

    created = runner.invoke(
        cli, ["users", "create", NEW, "--password", NEW_PASSWORD], env=env, prog_name="authz"
    )
    assert assert_ok(created).strip() == f"Created {NEW} with roles: user."
    assert account(app, NEW) is not None  # written to the same database

    checked = runner.invoke(
        cli, ["policy", "check", NEW, "/", "HEAD", "--explain"], env=env, prog_name="authz"
    )
    assert "allowed by rule [p, user, /, GET, allow]" in assert_ok(checked)

    duplicate = runner.invoke(
        cli, ["users", "create", NEW, "--password", NEW_PASSWORD], env=env, prog_name="authz"
    )
    assert "an account with this email already exists" in error_line(duplicate)


def test_the_authz_script_reports_a_bad_setting_in_one_line(app: Flask) -> None:
    result = CliRunner().invoke(
        cli, ["users", "list"], env=_script_env(app, AUTHZ_BOGUS="1"), prog_name="authz"
    )
    assert_clean(result)
    assert result.exit_code == 3  # a configuration error, the same status under gunicorn
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("Configuration error: AUTHZ_BOGUS: unknown setting")


# -- one spelling for email subjects; risky rows accepted with warnings -------------------

NO_ACCOUNT = "no account has this email yet; the rule applies once that address registers"


def test_roles_add_for_an_email_with_no_account_warns_on_stderr(
    app: Flask, runner: FlaskCliRunner
) -> None:
    result = invoke(runner, "roles", "add", "dave@example.com", "admin")
    assert_ok(result)
    assert f"dave@example.com: {NO_ACCOUNT}" in result.stderr
    assert "warning:" not in result.stdout
    assert "now has role admin" in result.stdout
    assert Rule.of("g", "dave@example.com", "admin") in engine_of(app).rules()


def test_a_warning_is_yellow(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["roles", "add", "dave@example.com", "admin"], color=True
    )
    assert "\x1b[33mwarning:" in result.stderr


@pytest.mark.parametrize("subject", ["User@Example.COM", " user@example.com"])
def test_policy_check_refuses_an_email_in_another_spelling(
    runner: FlaskCliRunner, subject: str
) -> None:
    line = error_line(invoke(runner, "policy", "check", subject, "/", "GET"))
    assert line == "Error: subject: write it as user@example.com"


def test_policy_add_adds_a_row_and_warns_about_risks(app: Flask, runner: FlaskCliRunner) -> None:
    result = invoke(runner, "policy", "add", "p", "anonymous", "/*", "GET|", "allow")
    assert_ok(result)
    assert "'GET|' matches every method" in result.stderr
    assert "gives anonymous visitors every request" in result.stderr
    assert Rule.of("p", "anonymous", "/*", "GET|", "allow") in engine_of(app).rules()
    assert audit(app)[0].action == "rule.add"


def test_policy_add_refuses_an_invalid_row(app: Flask, runner: FlaskCliRunner) -> None:
    before = state(app)
    line = error_line(invoke(runner, "policy", "add", "p", "Dave@Example.com", "/", "GET"))
    assert line == "Error: sub: write it as dave@example.com"
    assert state(app) == before


def test_policy_load_refuses_an_email_in_another_spelling(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "upper.csv"
    path.write_text("p, user, /, GET\ng, Dave@Example.com, admin\n", encoding="utf-8")
    before = state(app)
    result = invoke(runner, "policy", "load", str(path))
    assert result.exit_code != 0
    assert "line 2: member: write it as dave@example.com" in result.output
    assert state(app) == before


def test_policy_load_warns_with_line_numbers(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "risky.csv"
    path.write_text(
        "p, user, /reports, GET\ng, dave@example.com, admin\np, anonymous, *, .*\n",
        encoding="utf-8",
    )
    result = invoke(runner, "policy", "load", str(path))
    assert_ok(result)
    assert f"line 2: [g, dave@example.com, admin] dave@example.com: {NO_ACCOUNT}" in result.stderr
    assert "line 3: [p, anonymous, *, .*, allow]" in result.stderr
    assert "line 1:" not in result.stderr
    # The dry run of another file shows the warnings before anything is written.
    path.write_text("p, anonymous, /*, GET|\n", encoding="utf-8")
    dry = invoke(runner, "policy", "load", "--dry-run", str(path))
    assert "line 1: [p, anonymous, /*, GET|, allow]" in dry.stderr


def test_export_then_replace_gives_back_the_same_rows(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    """Every tricky value the write path accepts survives export and load --replace."""
    tricky = [
        Rule.of("p", "user", "/a,b", "GET", "allow"),
        Rule.of("p", "user", '/say "hi"', "GET", "deny"),
        Rule.of("p", "user", "/x", "#GET", "allow"),
        Rule.of("p", "ops@example.com", "/#with spaces", "GET|POST", "allow"),
        Rule.of("p", "user", "/caf\u00e9/\u6771\u4eac/nbsp\u00a0in", "GET", "allow"),
        Rule.of("g", "dave@example.com", "admin"),
    ]
    engine_of(app).apply(Change.adding(*tricky), actor="t", source="cli")
    path = tmp_path / "export.csv"
    assert_ok(invoke(runner, "policy", "export", str(path)))
    before = state(app)
    out = assert_ok(invoke(runner, "policy", "load", "--replace", str(path)))
    assert "0 added, 0 removed" in out
    assert state(app) == before
    assert csvio.read_file(path, engine_of(app).model).rules == tuple(
        sorted(engine_of(app).rules(), key=lambda r: r.is_role_link)
    )


def test_giving_the_default_role_a_role_warns_that_every_account_gets_it(
    app: Flask, runner: FlaskCliRunner
) -> None:
    """``g, user, auditor`` gives anyone who registers that role: written, with a warning."""
    engine_of(app).apply(
        Change.adding(Rule.of("p", "auditor", "/audit/*", "GET", "allow")), actor="t", source="cli"
    )
    result = runner.invoke(args=["roles", "add", "user", "auditor"])
    assert result.exit_code == 0, result.output
    assert "every account (anyone who registers included) gets role 'auditor'" in result.output
