"""The command line as scripts use it: exit statuses, idempotent commands, and ``--help``
that builds nothing (no instance folder, no database file, no connection).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskCliRunner

import service
from authz import Rule
from service.cli import cli
from tests.conftest import ADMIN
from tests.conftest import USER
from tests.conftest import make_token
from tests.integration.test_cli import DATA
from tests.integration.test_cli import LOCKOUT
from tests.integration.test_cli import assert_clean
from tests.integration.test_cli import assert_ok
from tests.integration.test_cli import audit
from tests.integration.test_cli import fresh_app  # noqa: F401 - a fixture
from tests.integration.test_cli import invoke
from tests.integration.test_cli import rules
from tests.integration.test_cli import state

# -- policy check: 0 allow, 1 deny, 2 error -------------------------------------------


@pytest.mark.parametrize(
    ("args", "status", "shown"),
    [
        pytest.param([USER, "/", "GET"], 0, "allow", id="allow"),
        pytest.param([ADMIN, "/admin/", "GET"], 0, "allow", id="allow-admin"),
        pytest.param([USER, "/admin/", "GET"], 1, "deny", id="deny"),
        pytest.param(
            ["anonymous", "/", "GET", "--explain"], 1, "deny: anonymous", id="deny-explain"
        ),
        pytest.param([USER, "/a/../admin/", "GET"], 2, "dot segment", id="unsafe-path"),
        pytest.param(["User@Example.com", "/", "GET"], 2, "write it as", id="subject-spelling"),
        pytest.param([USER, "/" + "a" * 10_000, "GET"], 2, "Error: ", id="path-too-long"),
        pytest.param([USER, "/"], 2, "Missing argument 'METHOD'", id="usage"),
        pytest.param([USER, "/", "GET", "--bogus"], 2, "No such option", id="unknown-option"),
    ],
)
def test_policy_check_exit_statuses(
    runner: FlaskCliRunner, args: list[str], status: int, shown: str
) -> None:
    result = invoke(runner, "policy", "check", *args)
    assert_clean(result)
    assert result.exit_code == status, result.output
    assert shown in result.output


def test_policy_check_exits_2_when_the_service_cannot_decide(fresh_app: Flask) -> None:  # noqa: F811
    result = invoke(fresh_app.test_cli_runner(), "policy", "check", "anonymous", "/", "GET")
    assert_clean(result)
    assert result.exit_code == 2
    assert "allow" not in result.output and "deny" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["users", "list"], id="users-list"),
        pytest.param(["roles", "add", USER, "admin"], id="roles-add"),
        pytest.param(["roles", "remove", USER, "admin"], id="roles-remove"),
        pytest.param(["users", "activate", USER], id="users-activate"),
        pytest.param(["policy", "load", str(DATA / "good_small.csv")], id="policy-load"),
        pytest.param(["policy", "load", str(DATA / "good_small.csv"), "--dry-run"], id="dry-run"),
        pytest.param(["policy", "export"], id="policy-export"),
    ],
)
def test_commands_exit_3_when_the_service_cannot_decide(
    fresh_app: Flask,  # noqa: F811
    args: list[str],
) -> None:
    result = invoke(fresh_app.test_cli_runner(), *args)
    assert_clean(result)
    assert result.exit_code == 3, result.output
    assert result.output.startswith("Error: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["roles", "add", USER, "editor"], "no role 'editor'", id="unknown-role"),
        pytest.param(["roles", "remove", ADMIN, "admin"], LOCKOUT, id="lockout"),
        pytest.param(["users", "activate", "nobody@example.com"], "no account", id="no-account"),
        pytest.param(["policy", "load", str(DATA / "bad_arity.csv")], "bad line(s)", id="bad-file"),
    ],
)
def test_refusals_exit_1(app: Flask, runner: FlaskCliRunner, args: list[str], message: str) -> None:
    before = state(app)
    result = invoke(runner, *args)
    assert_clean(result)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert state(app) == before


# -- idempotent commands: "already", exit 0, no second audit entry ---------------------


def _twice(app: Flask, runner: FlaskCliRunner, *args: str) -> tuple[str, str]:
    """Run a command twice; the first writes one audit entry, the second none."""
    count = len(audit(app))
    first = assert_ok(invoke(runner, *args))
    assert len(audit(app)) == count + 1, first
    after_first = state(app)
    second = assert_ok(invoke(runner, *args))
    assert state(app) == after_first
    return first.strip(), second.strip()


def test_roles_add_twice(app: Flask, runner: FlaskCliRunner) -> None:
    first, second = _twice(app, runner, "roles", "add", USER, "admin")
    assert first == f"{USER} now has role admin."
    assert second == f"{USER} already has role admin; nothing changed."
    assert audit(app)[0].action == "role.assign"


def test_roles_remove_twice(app: Flask, runner: FlaskCliRunner) -> None:
    assert_ok(invoke(runner, "roles", "add", USER, "admin"))
    first, second = _twice(app, runner, "roles", "remove", USER, "admin")
    assert first == f"{USER} no longer has role admin."
    assert second == f"{USER} did not have role admin; nothing changed."
    assert audit(app)[0].action == "role.remove"


def test_roles_remove_of_a_role_never_held_changes_nothing(
    app: Flask, runner: FlaskCliRunner
) -> None:
    before = state(app)
    for subject, role in ((USER, "admin"), (ADMIN, "user"), ("nobody@example.com", "user")):
        out = assert_ok(invoke(runner, "roles", "remove", subject, role))
        assert out.strip() == f"{subject} did not have role {role}; nothing changed."
    assert state(app) == before


def test_roles_add_for_a_token_twice(app: Flask, runner: FlaskCliRunner) -> None:
    make_token(app, "deploy", roles=())
    first, second = _twice(app, runner, "roles", "add", "token:deploy", "user")
    assert first == "token:deploy now has role user."
    assert "already has role user" in second
    assert Rule.of("g", "token:deploy", "user") in rules(app)


def test_roles_add_ahead_of_registration_warns_once_and_is_idempotent(
    app: Flask, runner: FlaskCliRunner
) -> None:
    first = invoke(runner, "roles", "add", "dave@example.com", "admin")
    assert_ok(first)
    assert "warning: " in first.stderr and "no account has this email yet" in first.stderr
    before = state(app)
    second = invoke(runner, "roles", "add", "dave@example.com", "admin")
    assert_ok(second)
    assert second.stdout.strip() == "dave@example.com already has role admin; nothing changed."
    assert state(app) == before


def test_users_deactivate_and_activate_twice(app: Flask, runner: FlaskCliRunner) -> None:
    first, second = _twice(app, runner, "users", "deactivate", USER)
    assert first == f"Deactivated {USER}; its sessions are ended."
    assert second == f"{USER} is already inactive; nothing changed."
    first, second = _twice(app, runner, "users", "activate", USER)
    assert first == f"Activated {USER}."
    assert second == f"{USER} is already active; nothing changed."


def test_users_activate_of_an_active_account_writes_nothing(
    app: Flask, runner: FlaskCliRunner
) -> None:
    before = state(app)
    out = assert_ok(invoke(runner, "users", "activate", ADMIN))
    assert out.strip() == f"{ADMIN} is already active; nothing changed."
    assert state(app) == before


# -- --help builds nothing ----------------------------------------------------------------


def _every_help(group: click.Group) -> Iterator[list[str]]:
    """The ``--help`` invocation of the script, every group and every command."""
    yield ["--help"]
    for name, command in sorted(group.commands.items()):
        yield [name, "--help"]
        if isinstance(command, click.Group):
            for sub in sorted(command.commands):
                yield [name, sub, "--help"]


@pytest.fixture
def silent_database() -> Iterator[int]:
    """A port that accepts connections and records them (as a database server would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.setblocking(False)
        yield server.getsockname()[1]
        # Anything that tried to connect sits in the backlog: accept finds it.
        with pytest.raises(BlockingIOError):
            server.accept()


def test_help_never_builds_the_app_creates_files_or_connects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_database: int
) -> None:
    """``authz --help`` (and every group's and command's) works on a machine with no
    database and an empty working directory, and leaves it empty."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def no_app(*_args: Any, **_kwargs: Any) -> Flask:
        raise AssertionError("--help built the app")

    monkeypatch.setattr(service, "create_app", no_app)
    env = {
        "AUTHZ_INSTANCE_PATH": str(work / "instance"),
        "AUTHZ_DATABASE_URL": f"postgresql://authz@127.0.0.1:{silent_database}/authz",
    }
    helps = list(_every_help(cli))
    assert ["policy", "load", "--help"] in helps and ["db", "init", "--help"] in helps
    for args in helps:
        result = CliRunner().invoke(cli, args, env=env, prog_name="authz")
        assert result.exit_code == 0, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Usage: authz" in result.output
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "documented"),
    [
        pytest.param(["--help"], "3 the service", id="script"),
        pytest.param(["policy", "--help"], "2 usage error", id="group"),
        pytest.param(["policy", "check", "--help"], "0 allow, 1 deny, 2 error", id="check"),
        pytest.param(["policy", "load", "--help"], "--include-assignments", id="load"),
        pytest.param(["policy", "export", "--help"], "--assignments-only", id="export"),
    ],
)
def test_help_documents_exit_statuses_and_flags(args: list[str], documented: str) -> None:
    result = CliRunner().invoke(cli, args, prog_name="authz", terminal_width=200)
    assert result.exit_code == 0
    assert documented in " ".join(result.output.split())


def test_policy_check_decides_a_deactivated_account_as_anonymous(app: Flask) -> None:
    """As the middleware would: the verdict is anonymous's, and the note says so."""
    from service import users as accounts

    with app.app_context():
        accounts.set_active(USER, False, actor="test", source="cli")
    result = app.test_cli_runner().invoke(args=["policy", "check", USER, "/", "GET"])
    assert result.exit_code == 1, result.output
    assert f"{USER} is deactivated; its requests are decided as anonymous" in result.output
    assert "deny" in result.output
