"""Policy tests on the command line: ``policy test``, the ``tests`` group, every policy
write refused by a broken test (and forced past one), and the what-if of ``--dry-run``.

Real SQLite (and PostgreSQL) databases through the CLI runner, the ``authz`` script and,
for the CI step, a subprocess; effects are read back through the engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

from authz import Rule
from authz import expectations
from service.cli import cli
from service.config import ROOT
from tests.conftest import ADMIN
from tests.conftest import USER
from tests.integration.test_cli import assert_clean
from tests.integration.test_cli import assert_ok
from tests.integration.test_cli import audit
from tests.integration.test_cli import current_policy_text
from tests.integration.test_cli import engine_of
from tests.integration.test_cli import fresh_app  # noqa: F401 - a fixture
from tests.integration.test_cli import invoke
from tests.integration.test_cli import rules
from tests.integration.test_cli import state
from tests.integration.test_health import raw_insert

POLICY = ROOT / "policies" / "default.csv"
TESTS = ROOT / "policies" / "default-tests.csv"
SHIPPED = len(expectations.read_file(TESTS).expectations)
VISITORS = "anonymous may not GET /admin/"
OPEN_ADMIN = "p, anonymous, /admin/*, GET, allow"


# -- helpers ----------------------------------------------------------------------------


def store_tests(app: Flask, text: str) -> None:
    """Store policy tests (CSV lines) as an operator's earlier load would have."""
    items = expectations.parse(text).expectations
    engine_of(app).change_expectations(items, actor="test", source="test", action="tests.load")


def stored(app: Flask) -> list[str]:
    """The stored policy tests as CSV lines, in order."""
    return [",".join(e.as_list()) for e in engine_of(app).expectations()]


def everything(app: Flask) -> dict[str, Any]:
    """What a command may change: rules, revision, audit log, accounts and policy tests."""
    return {**state(app), "tests": stored(app)}


def failed(result: Result, status: int = 1) -> str:
    """The command ended cleanly with ``status``; return everything it printed."""
    assert_clean(result)
    assert result.exit_code == status, result.output
    return result.output


def script(args: list[str], env: dict[str, str]) -> Result:
    """Run the ``authz`` script in-process (it builds its own app, as in production)."""
    return CliRunner().invoke(cli, args, env=env, prog_name="authz")


def script_env(instance: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``authz`` run whose instance folder is ``instance`` and whose
    database is the SQLite file there (the default), unless ``extra`` names another."""
    return {
        "AUTHZ_ENV": "testing",
        "AUTHZ_SECRET_KEY": "test-secret-key-of-at-least-thirty-two-chars",
        "AUTHZ_INSTANCE_PATH": str(instance),
        "AUTHZ_POLL_INTERVAL": "0",
        **extra,
    }


def breaking_policy(tmp_path: Path) -> Path:
    """The shipped policy plus a row that opens the editor to visitors."""
    path = tmp_path / "open.csv"
    path.write_text(POLICY.read_text(encoding="utf-8") + OPEN_ADMIN + "\n", encoding="utf-8")
    return path


# -- policy test on files (CI): no database ------------------------------------------------


def test_policy_test_passes_on_the_shipped_files_without_opening_a_database(
    tmp_path: Path,
) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    result = script(
        ["policy", "test", "--file", str(POLICY), "--tests", str(TESTS)], script_env(instance)
    )
    assert_ok(result)
    assert result.stdout.splitlines() == [f"{SHIPPED} passed, 0 failed"]
    assert list(instance.iterdir()) == []  # no authz.db, no -wal, no -shm


def test_policy_test_on_files_needs_no_reachable_database(tmp_path: Path) -> None:
    """A database URL nobody answers on: the files alone decide."""
    env = script_env(
        tmp_path / "instance",
        AUTHZ_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:9/none",
        AUTHZ_DB_CONNECT_TIMEOUT="1",
    )
    result = script(["policy", "test", "--file", str(POLICY), "--tests", str(TESTS), "-v"], env)
    out = assert_ok(result)
    assert f"pass: {VISITORS} (visitors never open the policy editor): denied" in out
    assert len([line for line in out.splitlines() if line.startswith("pass: ")]) == SHIPPED


def test_the_ci_step_runs_as_a_console_script(tmp_path: Path) -> None:
    """The very line of .ci/run, in the repository, with no AUTHZ_* setting but the
    instance folder (kept out of the checkout): it passes and leaves no database."""
    line = "authz policy test --file policies/default.csv --tests policies/default-tests.csv"
    assert line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    env["AUTHZ_INSTANCE_PATH"] = str(tmp_path / "instance")
    authz = Path(sys.executable).parent / "authz"
    done = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(authz), *line.split()[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{SHIPPED} passed, 0 failed"
    made = {p.name for p in (tmp_path / "instance").iterdir()}
    assert not {name for name in made if name.startswith("authz.db")}, made


def test_policy_test_fails_on_a_policy_file_that_breaks_a_test(tmp_path: Path) -> None:
    env = script_env(tmp_path / "instance")
    args = ["policy", "test", "--file", str(breaking_policy(tmp_path)), "--tests", str(TESTS)]
    out = failed(script(args, env))
    # Each failure named, with the rule that now decides it; then the summary.
    assert (
        f"FAIL: {VISITORS} (visitors never open the policy editor): "
        f"allowed by rule [{OPEN_ADMIN}]" in out
    )
    assert "FAIL: user may not GET /admin/ (only admins open the policy editor): " in out
    assert f"Error: {SHIPPED - 2} passed, 2 failed" in out
    assert "pass: " not in out  # passes only with --verbose


@pytest.mark.parametrize(
    ("flag", "text", "shown"),
    [
        pytest.param(
            "--tests",
            "anonymous, GET, /admin/, deny\nuser, GET, /, maybe\nuser, get, /, allow\n",
            [
                "--tests ",
                "2 bad line(s)",
                "line 2: outcome: must be allow or deny",
                "line 3: method",
            ],
            id="tests",
        ),
        pytest.param(
            "--file",
            "p, user, /, GET, allow\np, user, /x\n",
            ["--file ", "1 bad line(s)", "line 2: "],
            id="policy",
        ),
    ],
)
def test_policy_test_names_every_bad_line_of_a_file(
    tmp_path: Path, flag: str, text: str, shown: list[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(text, encoding="utf-8")
    files = {"--file": str(POLICY), "--tests": str(TESTS), flag: str(bad)}
    args = ["policy", "test", *(x for pair in files.items() for x in pair)]
    out = failed(script(args, script_env(tmp_path / "instance")))
    for part in shown:
        assert part in out
    assert "passed" not in out


def test_policy_test_names_both_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("nonsense\n", encoding="utf-8")
    args = ["policy", "test", "--file", str(bad), "--tests", str(bad)]
    out = failed(script(args, script_env(tmp_path / "instance")))
    assert f"--file {bad}: 1 bad line(s)" in out
    assert f"--tests {bad}: 1 bad line(s)" in out


def test_policy_test_of_a_missing_file(tmp_path: Path) -> None:
    args = ["policy", "test", "--file", str(POLICY), "--tests", str(tmp_path / "none.csv")]
    out = failed(script(args, script_env(tmp_path / "instance")))
    assert "cannot read" in out


# -- policy test on the stored policy and tests ----------------------------------------


def test_policy_test_runs_the_stored_tests_on_the_stored_policy(
    app: Flask, runner: FlaskCliRunner
) -> None:
    result = invoke(runner, "policy", "test")
    assert_ok(result)
    assert "0 passed, 0 failed" in result.stdout
    assert "no policy tests to run" in result.stderr

    store_tests(app, TESTS.read_text(encoding="utf-8"))
    assert assert_ok(invoke(runner, "policy", "test")).strip() == f"{SHIPPED} passed, 0 failed"
    verbose = assert_ok(invoke(runner, "policy", "test", "--verbose"))
    assert f"pass: {VISITORS}" in verbose

    assert_ok(invoke(runner, "policy", "add", *OPEN_ADMIN.split(", "), "--force"))
    out = failed(invoke(runner, "policy", "test"))
    assert f"FAIL: {VISITORS} (visitors never open the policy editor): allowed by rule" in out
    assert f"Error: {SHIPPED - 2} passed, 2 failed" in out


def test_policy_test_of_a_file_against_the_stored_tests_and_the_reverse(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    store_tests(app, "anonymous, GET, /admin/, deny\n")
    assert stored(app) == ["anonymous,GET,/admin/,deny"]
    before = everything(app)
    out = failed(invoke(runner, "policy", "test", "--file", str(breaking_policy(tmp_path))))
    assert "Error: 0 passed, 1 failed" in out
    assert_ok(invoke(runner, "policy", "test", "--tests", str(TESTS)))
    assert everything(app) == before


def test_a_stored_test_that_does_not_read_counts_as_failing(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    engine = engine_of(app)
    with engine.store.transaction() as session:  # edited by hand in the database
        engine.store.insert_expectations(session, [("anonymous", "get", "/x", "deny", "")])
    out = failed(invoke(runner, "policy", "test"))
    assert "FAIL: stored policy test" in out and "(anonymous, get, /x)" in out
    assert "Error: 0 passed, 1 failed" in out
    listed = assert_ok(invoke(runner, "tests", "list"))
    assert "(anonymous, get, /x)" in listed and "1 policy test(s), 1 failing." in listed
    # It refuses every policy write until it is fixed or removed (by its id).
    refused = failed(invoke(runner, "policy", "add", "p", "user", "/x", "GET", "allow"))
    assert "do not read" in refused
    test_id = listed.split("(id ")[1].split(")")[0]
    assert_ok(invoke(runner, "tests", "remove", test_id))
    assert engine.bad_expectations() == []
    assert_ok(invoke(runner, "policy", "add", "p", "user", "/x", "GET", "allow"))
    with engine.store.transaction() as session:
        engine.store.insert_expectations(session, [("anonymous", "get", "/x", "deny", "")])
    # A load in place of the stored tests removes it too.
    good = tmp_path / "good.csv"
    good.write_text("anonymous, GET, /admin/, deny\n", encoding="utf-8")
    assert_ok(invoke(runner, "tests", "load", str(good), "--replace"))
    assert engine.bad_expectations() == []
    assert assert_ok(invoke(runner, "policy", "test")).strip() == "1 passed, 0 failed"


def test_policy_test_exits_3_on_a_refused_stored_policy(app: Flask, runner: FlaskCliRunner) -> None:
    """A stored deny row that could grant if skipped: requests get 503, tests cannot pass."""
    store_tests(app, "user, GET, /, allow\n")
    raw_insert(app, "p", "user", "/zzz", "GET ", "deny")
    engine_of(app).load()  # as a new `authz` process reads it
    out = failed(invoke(runner, "policy", "test"), status=3)
    assert "FAIL: user may GET /: not decided" in out
    assert "Error: 0 passed, 1 failed: the stored policy is refused" in out


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="stored"),
        pytest.param(["--file", str(POLICY)], id="file-with-stored-tests"),
        pytest.param(["--tests", str(TESTS)], id="stored-policy-with-file-tests"),
    ],
)
def test_policy_test_exits_3_when_the_service_cannot_decide(
    fresh_app: Flask,  # noqa: F811
    args: list[str],
) -> None:
    out = failed(invoke(fresh_app.test_cli_runner(), "policy", "test", *args), status=3)
    assert "passed" not in out


# -- every CLI policy write is gated; --force goes past, audited ---------------------------


def _admin_rule_file(tmp_path: Path) -> list[str]:
    path = tmp_path / "more.csv"
    path.write_text(OPEN_ADMIN + "\n", encoding="utf-8")
    return ["policy", "load", str(path)]


def _no_home_file(tmp_path: Path, runner: FlaskCliRunner) -> list[str]:
    text = current_policy_text(runner).replace("p, user, /, GET, allow\n", "")
    path = tmp_path / "no-home.csv"
    path.write_text(text, encoding="utf-8")
    return ["policy", "load", str(path), "--replace"]


GATED = [
    pytest.param(
        "anonymous, GET, /admin/, deny, visitors never open the editor",
        lambda tmp, runner: ["policy", "add", *OPEN_ADMIN.split(", ")],
        id="policy-add",
    ),
    pytest.param(
        "anonymous, GET, /admin/, deny, visitors never open the editor",
        lambda tmp, runner: _admin_rule_file(tmp),
        id="policy-load-merge",
    ),
    pytest.param(
        "user, GET, /, allow, users see the home page",
        _no_home_file,
        id="policy-load-replace",
    ),
    pytest.param(
        f"{USER}, GET, /admin/, deny, this account is no admin",
        lambda tmp, runner: ["roles", "add", USER, "admin"],
        id="roles-add",
    ),
    pytest.param(
        "admin, GET, /, allow, admins see the home page",
        lambda tmp, runner: ["roles", "remove", "admin", "user"],
        id="roles-remove",
    ),
]


@pytest.mark.parametrize(("test", "command"), GATED)
def test_a_write_that_breaks_a_policy_test_is_refused_and_forced_past(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, test: str, command: Any
) -> None:
    store_tests(app, test + "\n")
    promise = str(expectations.parse(test).expectations[0])
    args = command(tmp_path, runner)
    before = everything(app)

    refused = invoke(runner, *args)
    out = failed(refused)
    assert f"FAIL: {promise} (" in refused.stderr  # the test, with the rule deciding it now
    assert "Error: refused: this change breaks 1 policy test(s) (listed above)" in out
    assert "--force writes it anyway" in out
    assert everything(app) == before  # no row, no revision, no audit entry

    # The dry run predicts the refusal and writes nothing either.
    dry = invoke(runner, *args, "--dry-run")
    assert f"breaks: {promise}: " in failed(dry)
    assert everything(app) == before

    forced = invoke(runner, *args, "--force")
    assert_ok(forced)
    entry = audit(app)[0]
    assert entry.forced
    assert f"forced past 1 policy test(s): {promise}" in entry.detail
    assert everything(app)["revision"] == before["revision"] + 1


def test_token_and_account_creation_are_refused_and_forced(
    app: Flask, runner: FlaskCliRunner
) -> None:
    """A token or an account given a role a test forbids is refused, with the test listed
    and nothing written; --force creates it and the audit entry says so."""
    store_tests(app, "token:ci, GET, /admin/, deny\nnew@example.com, GET, /admin/, deny\n")
    before = everything(app)
    token = invoke(runner, "tokens", "create", "ci", "--role", "admin")
    assert "FAIL: token:ci may not GET /admin/" in failed(token)
    assert "--force writes it anyway" in token.output
    account = invoke(
        runner, "users", "create", "new@example.com", "--password", "pw-new-1234", "--role", "admin"
    )
    assert "FAIL: new@example.com may not GET /admin/" in failed(account)
    assert everything(app) == before
    assert "ci" not in assert_ok(invoke(runner, "tokens", "list"))
    assert_ok(invoke(runner, "tokens", "create", "ci", "--role", "admin", "--force"))
    assert "forced past 1 policy test(s): token:ci may not GET /admin/" in audit(app)[0].detail
    assert_ok(
        invoke(
            runner,
            "users",
            "create",
            "new@example.com",
            "--password",
            "pw-new-1234",
            "--role",
            "admin",
            "--force",
        )
    )
    entry = audit(app)[0]
    assert entry.forced and "new@example.com may not GET /admin/" in entry.detail


def test_force_help_says_it_goes_past_policy_tests(runner: FlaskCliRunner) -> None:
    for args in (
        ["policy", "load"],
        ["policy", "add"],
        ["roles", "add"],
        ["roles", "remove"],
    ):
        out = " ".join(assert_ok(invoke(runner, *args, "--help")).split())
        assert "--force Even if it breaks a policy test" in out, args
        assert "--dry-run" in out, args


# -- the tests group ------------------------------------------------------------------------


def test_tests_add_list_export_remove_load_round_trip(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    added = invoke(runner, "tests", "add", "anonymous", "GET", "/admin/", "deny", "--note", "no")
    home = expectations.expectation("user", "GET", "/", "allow")
    assert_ok(added)
    assert "Added policy test " in added.stdout
    assert_ok(invoke(runner, "tests", "add", "user", "GET", "/", "allow"))
    assert stored(app) == ["anonymous,GET,/admin/,deny,no", "user,GET,/,allow"]
    entries = audit(app)[:2]
    assert [e.action for e in entries] == ["test.add", "test.add"]
    assert {e.source for e in entries} == {"cli"} and not any(e.forced for e in entries)

    listed = assert_ok(invoke(runner, "tests", "list"))
    assert f"{home.id}\tpass: user may GET /: allowed by rule [p, user, /, GET, allow]" in listed
    assert "pass: anonymous may not GET /admin/ (no): denied: no rule matches" in listed
    assert listed.splitlines()[-1] == "2 policy test(s), 0 failing."
    assert assert_ok(invoke(runner, "tests", "list", "--failing")).splitlines() == [
        "0 policy test(s) failing."
    ]

    exported = tmp_path / "tests.csv"
    assert "Exported 2 policy test(s)" in assert_ok(
        invoke(runner, "tests", "export", str(exported))
    )
    assert not list(tmp_path.glob("*.partial"))
    stdout = assert_ok(invoke(runner, "tests", "export"))
    assert stdout == exported.read_text(encoding="utf-8")

    # Removed by id, and by request.
    assert "Removed policy test" in assert_ok(invoke(runner, "tests", "remove", home.id))
    assert_ok(invoke(runner, "tests", "remove", "anonymous", "GET", "/admin/"))
    assert stored(app) == []
    assert "no policy test with id" in failed(invoke(runner, "tests", "remove", home.id))

    # The export loads back to the same tests; loading it again changes nothing.
    loaded = assert_ok(invoke(runner, "tests", "load", str(exported)))
    assert "2 added, 0 removed" in loaded
    assert stored(app) == ["anonymous,GET,/admin/,deny,no", "user,GET,/,allow"]
    count = len(audit(app))
    assert "nothing changed" in assert_ok(invoke(runner, "tests", "load", str(exported)))
    assert len(audit(app)) == count


def test_tests_add_of_a_test_the_policy_does_not_keep_is_refused_unless_forced(
    app: Flask, runner: FlaskCliRunner
) -> None:
    before = everything(app)
    args = ["tests", "add", "anonymous", "GET", "/admin/", "allow", "--note", "open house"]
    refused = invoke(runner, *args)
    out = failed(refused)
    assert "FAIL: anonymous may GET /admin/ (open house): denied: no rule matches" in out
    assert "refused: the policy does not keep 1 of these policy test(s)" in out
    assert everything(app) == before

    forced = invoke(runner, *args, "--force")
    assert_ok(forced)
    assert "stored although the policy does not keep it (forced)" in forced.stderr
    entry = audit(app)[0]
    assert entry.action == "test.add" and entry.forced
    assert "anonymous may GET /admin/" in entry.detail
    failing = assert_ok(invoke(runner, "tests", "list", "--failing"))
    assert "FAIL: anonymous may GET /admin/" in failing
    assert failing.splitlines()[-1] == "1 policy test(s) failing."
    assert "Error: 0 passed, 1 failed" in failed(invoke(runner, "policy", "test"))


def test_tests_add_replaces_the_test_of_the_same_request(
    app: Flask, runner: FlaskCliRunner
) -> None:
    assert_ok(invoke(runner, "tests", "add", "user", "GET", "/", "allow"))
    replaced = invoke(runner, "tests", "add", "user", "GET", "/", "allow", "--note", "home")
    assert "Replaced policy test" in assert_ok(replaced)
    assert stored(app) == ["user,GET,/,allow,home"]
    count = len(audit(app))
    again = invoke(runner, "tests", "add", "user", "GET", "/", "allow", "--note", "home")
    assert "nothing changed" in assert_ok(again)
    assert len(audit(app)) == count


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        pytest.param(["User@Example.com", "GET", "/", "allow"], "write it as", id="spelling"),
        pytest.param(["user", "get", "/", "allow"], "method: must be", id="method-case"),
        pytest.param(["user", "HEAD", "/", "allow"], "HEAD is decided as GET", id="head"),
        pytest.param(["user", "GET", "/a/../admin/", "allow"], "dot segment", id="dot-segment"),
        pytest.param(["user", "GET", "/x\x00", "allow"], "path", id="nul"),
        pytest.param(["user", "GET", "/", "maybe"], "outcome: must be allow or deny", id="outcome"),
        pytest.param(["user", "GET", "/", "Allow"], "outcome", id="outcome-case"),
        pytest.param(["user", "GET", "/", "allow", "--note", "a\x1b[2Jb"], "note", id="note-esc"),
        pytest.param(["user", "GET", "/", "allow", "--note", "x" * 501], "note", id="note-long"),
        pytest.param(["a b", "GET", "/", "allow"], "subject", id="subject"),
    ],
)
def test_tests_add_refuses_bad_input_naming_the_field(
    app: Flask, runner: FlaskCliRunner, args: list[str], shown: str
) -> None:
    before = everything(app)
    out = failed(invoke(runner, "tests", "add", *args))
    assert shown in out and "Traceback" not in out
    assert everything(app) == before


def test_tests_remove_usage(runner: FlaskCliRunner) -> None:
    assert "ID, or its SUBJECT METHOD PATH" in failed(
        invoke(runner, "tests", "remove", "user", "GET"), status=2
    )
    assert "no policy test with user GET /" in failed(
        invoke(runner, "tests", "remove", "user", "GET", "/")
    )


def test_tests_load_replace_and_dry_run(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    store_tests(app, "user, GET, /, allow\nanonymous, GET, /admin/, deny, old note\n")
    path = tmp_path / "tests.csv"
    path.write_text("anonymous, GET, /admin/, deny, new note\nadmin, GET, /admin/, allow\n")
    before = everything(app)

    dry = invoke(runner, "tests", "load", str(path), "--replace", "--dry-run")
    assert assert_ok(dry).splitlines() == [
        "- user may GET /",
        "- anonymous may not GET /admin/ (old note)",
        "+ anonymous may not GET /admin/ (new note)",
        "+ admin may GET /admin/",
        "Dry run: would add 2 and remove 2 policy test(s); nothing changed.",
    ]
    assert everything(app) == before
    merge = assert_ok(invoke(runner, "tests", "load", str(path), "--dry-run"))
    assert "- user may GET /" not in merge
    assert everything(app) == before

    assert "2 added, 2 removed" in assert_ok(
        invoke(runner, "tests", "load", str(path), "--replace")
    )
    assert stored(app) == ["anonymous,GET,/admin/,deny,new note", "admin,GET,/admin/,allow"]
    assert audit(app)[0].action == "tests.load"


def test_tests_load_is_refused_whole_when_one_does_not_pass(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "tests.csv"
    path.write_text("user, GET, /, allow\nanonymous, GET, /admin/, allow, wrong\n")
    before = everything(app)
    for flags in ([], ["--dry-run"], ["--replace"]):
        out = failed(invoke(runner, "tests", "load", str(path), *flags))
        assert "FAIL: anonymous may GET /admin/ (wrong): denied: no rule matches" in out
        assert "user may GET /:" not in out  # only those that fail are listed as failing
        assert everything(app) == before, flags
    dry = assert_ok(invoke(runner, "tests", "load", str(path), "--dry-run", "--force"))
    assert "forced past 1 failing" in dry
    assert everything(app) == before
    assert_ok(invoke(runner, "tests", "load", str(path), "--force"))
    assert audit(app)[0].forced
    assert "forced past 1 policy test(s): anonymous may GET /admin/" in audit(app)[0].detail
    assert len(stored(app)) == 2


def test_tests_load_names_every_bad_line(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("user, GET, /, allow\nuser, GET, /, deny\nfoo\n", encoding="utf-8")
    before = everything(app)
    out = failed(invoke(runner, "tests", "load", str(path)))
    assert "2 bad line(s)" in out and "line 2: " in out and "line 3: " in out
    assert everything(app) == before


def test_tests_export_to_an_unwritable_place_fails_cleanly(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    store_tests(app, "user, GET, /, allow\n")
    target = tmp_path / "missing-folder" / "tests.csv"
    assert "cannot write" in failed(invoke(runner, "tests", "export", str(target)))
    assert not target.parent.exists()


def test_notes_and_paths_cannot_disguise_what_the_terminal_shows(
    app: Flask, runner: FlaskCliRunner
) -> None:
    """A bidirectional override or a C1 control in a note is refused; one stored by hand is
    shown escaped, never raw."""
    before = everything(app)
    refused = failed(
        invoke(runner, "tests", "add", "user", "GET", "/", "allow", "--note", "\u202eeton")
    )
    assert "note" in refused and everything(app) == before
    engine = engine_of(app)
    with engine.store.transaction() as session:  # edited by hand in the database
        engine.store.insert_expectations(
            session, [("user", "GET", "/", "allow", "\u202eeton \u009b2J")]
        )
    for args in (["tests", "list"], ["policy", "test", "-v"]):
        out = invoke(runner, *args).output
        assert "\u202e" not in out and "\u009b" not in out, args
        assert "does not read: note: must not contain control" in out, args


# -- --dry-run: the what-if ------------------------------------------------------------------


def test_policy_add_dry_run_shows_who_gains_and_the_flipped_tests(
    app: Flask, runner: FlaskCliRunner
) -> None:
    store_tests(app, "anonymous, GET, /admin/, deny\n")
    before = everything(app)
    dry = invoke(runner, "policy", "add", *OPEN_ADMIN.split(", "), "--dry-run")
    out = failed(dry)
    assert "  + anonymous may now GET /admin/" in dry.stdout
    assert "  + user may now GET /admin/" in dry.stdout
    assert f"Policy tests:\n  breaks: {VISITORS}: allowed by rule [{OPEN_ADMIN}]" in dry.stdout
    assert "Error: dry run (nothing changed): refused: this change breaks 1 policy test(s)" in out
    assert everything(app) == before

    forced = assert_ok(
        invoke(runner, "policy", "add", *OPEN_ADMIN.split(", "), "--dry-run", "--force")
    )
    assert (
        "Dry run: the change would be saved, forced past 1 policy test(s); nothing changed."
        in forced
    )
    assert everything(app) == before

    harmless = assert_ok(
        invoke(runner, "policy", "add", "p", "user", "/reports/:id", "POST", "allow", "--dry-run")
    )
    assert "  + user may now POST /reports/:id" in harmless
    assert "Policy tests:" not in harmless
    assert harmless.splitlines()[-1] == "Dry run: the change would be saved; nothing changed."
    same = assert_ok(invoke(runner, "policy", "add", "p", "user", "/", "GET", "allow", "--dry-run"))
    assert "already has" in same and "nothing would change" in same
    assert everything(app) == before


def test_roles_dry_runs_show_the_users_who_gain_and_lose(
    app: Flask, runner: FlaskCliRunner
) -> None:
    before = everything(app)
    gain = assert_ok(invoke(runner, "roles", "add", USER, "admin", "--dry-run"))
    assert "  + g, user@example.com, admin" in gain
    assert f"  + {USER} may now GET /admin/" in gain
    lose = assert_ok(invoke(runner, "roles", "remove", "admin", "user", "--dry-run"))
    assert "  - admin may no longer GET /" in lose
    assert f"{ADMIN} may no longer" not in lose  # their role's line explains it
    # The lockout guard refuses a dry run as it refuses the write.
    locked = failed(invoke(runner, "roles", "remove", ADMIN, "admin", "--dry-run"))
    assert f"  - {ADMIN} may no longer GET /admin/" in locked
    assert "Error: dry run (nothing changed): refused: after this change no active user" in locked
    assert "nothing would change" in assert_ok(
        invoke(runner, "roles", "add", ADMIN, "admin", "--dry-run")
    )
    assert "nothing would change" in assert_ok(
        invoke(runner, "roles", "remove", USER, "admin", "--dry-run")
    )
    assert everything(app) == before


def test_policy_load_dry_run_shows_the_flipped_tests(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    store_tests(app, "anonymous, GET, /admin/, deny, no visitors\n")
    before = everything(app)
    args = _admin_rule_file(tmp_path)
    dry = invoke(runner, *args, "--dry-run")
    out = failed(dry)
    assert dry.stdout.startswith(f"+ {OPEN_ADMIN}\nPolicy tests:\n  breaks: {VISITORS}")
    assert "  + anonymous may now GET /admin/" in dry.stdout
    assert "Error: dry run (nothing changed): the load would fail: refused: this change" in out
    assert everything(app) == before


def test_a_large_load_dry_run_finishes_in_seconds(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    """Thousands of rows, many roles and paths: the what-if is bounded (authz.whatif)."""
    store_tests(app, TESTS.read_text(encoding="utf-8"))
    lines = [f"p, team{i % 40}, /projects/{i}/*, GET|POST, allow" for i in range(2500)]
    lines += [f"g, team{i}, user" for i in range(40)]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = everything(app)
    started = time.monotonic()
    dry = assert_ok(invoke(runner, "policy", "load", str(path), "--dry-run"))
    took = time.monotonic() - started
    assert "Dry run: would add 2540 and remove 0 row(s); nothing changed." in dry
    assert "  + team0 may now " in dry
    assert "more line(s)" in dry and "Note: " in dry  # what the bounds left out is said
    assert took < 20, took  # about two seconds here; generous for a loaded CI machine
    assert everything(app) == before


def test_roles_add_force_goes_past_a_policy_test_only_when_asked(
    app: Flask, runner: FlaskCliRunner
) -> None:
    store_tests(app, f"{USER}, GET, /admin/, deny\n")
    assert failed(invoke(runner, "roles", "add", USER, "admin"))
    assert Rule.of("g", USER, "admin") not in rules(app)
    assert_ok(invoke(runner, "roles", "add", USER, "admin", "--force"))
    assert Rule.of("g", USER, "admin") in rules(app)


@pytest.mark.parametrize("group", ["tests", "policy"])
def test_an_export_never_writes_through_a_link_planted_beside_it(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, group: str
) -> None:
    """In a folder others can write to, a link at the export's partial name must not
    have the export written over the file it points to."""
    store_tests(app, "user, GET, /, allow\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n", encoding="utf-8")
    target = tmp_path / "out.csv"
    (tmp_path / ".out.csv.partial").symlink_to(victim)
    assert_ok(invoke(runner, group, "export", str(target)))
    assert victim.read_text(encoding="utf-8") == "precious\n"
    assert not target.is_symlink()
    row = "user,GET,/,allow" if group == "tests" else "p, user, /, GET, allow"
    assert row in target.read_text(encoding="utf-8").splitlines()
    assert not (tmp_path / ".out.csv.partial").exists()
