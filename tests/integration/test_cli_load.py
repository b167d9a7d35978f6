"""Deploy-time loads: rules apart from role assignments, empty files, dry runs that run
every check, flags that exclude each other, and a replace that holds under concurrent writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

from authz import Change
from authz import Rule
from service import create_app
from service import loading
from tests.conftest import ADMIN
from tests.conftest import USER
from tests.conftest import app_config
from tests.conftest import dispose
from tests.conftest import make_token
from tests.integration.test_cli import LOCKOUT
from tests.integration.test_cli import assert_clean
from tests.integration.test_cli import assert_ok
from tests.integration.test_cli import audit
from tests.integration.test_cli import engine_of
from tests.integration.test_cli import invoke
from tests.integration.test_cli import read_policy
from tests.integration.test_cli import rules
from tests.integration.test_cli import state

REPORTS = Rule.of("p", "user", "/reports/*", "GET", "allow")
FAVICON = Rule.of("p", "anonymous", "/favicon.ico", "GET", "allow")


def assignments(app: Flask) -> list[Rule]:
    """The stored role assignments (g rows naming an email or a token), sorted."""
    return [r for r in rules(app) if r.ptype == "g" and ("@" in r.values[0] or ":" in r.values[0])]


def rules_part(app: Flask) -> list[Rule]:
    """The stored rules and role links, sorted."""
    mine = set(assignments(app))
    return [r for r in rules(app) if r not in mine]


def export(runner: FlaskCliRunner, path: Path, *flags: str) -> Path:
    assert_ok(invoke(runner, "policy", "export", str(path), *flags))
    return path


def edited_rules(runner: FlaskCliRunner, tmp_path: Path) -> Path:
    """The current rules without the favicon row, plus a reports row (no assignments)."""
    path = export(runner, tmp_path / "rules.csv", "--rules-only")
    text = path.read_text(encoding="utf-8").replace("p, anonymous, /favicon.ico, GET, allow\n", "")
    path.write_text(text + "p, user, /reports/*, GET, allow\n", encoding="utf-8")
    return path


@pytest.fixture
def with_token(app: Flask) -> Flask:
    """The app with a token holding a role: a ``token:NAME`` assignment in the table."""
    make_token(app, "deploy", roles=("user",))
    assert Rule.of("g", "token:deploy", "user") in rules(app)
    return app


# -- 1. a replace covers rules and role links; assignments only when asked ----------------


def test_replace_keeps_user_and_token_assignments(
    with_token: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    app = with_token
    kept = assignments(app)
    assert Rule.of("g", USER, "user") in kept and Rule.of("g", ADMIN, "admin") in kept
    path = edited_rules(runner, tmp_path)
    out = assert_ok(invoke(runner, "policy", "load", str(path), "--replace"))
    assert f"Loaded {path} (replace): 1 added, 1 removed" in out
    assert assignments(app) == kept
    assert rules_part(app) == read_policy(app, path)
    entry = audit(app)[0]
    assert (entry.action, entry.added, entry.removed) == (
        "policy.load.replace",
        (REPORTS,),
        (FAVICON,),
    )


def test_replace_with_include_assignments_makes_the_table_equal_to_the_file(
    with_token: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    app = with_token
    path = edited_rules(runner, tmp_path)
    path.write_text(path.read_text() + f"g, {ADMIN}, admin\ng, dave@example.com, user\n")
    out = assert_ok(
        invoke(runner, "policy", "load", str(path), "--replace", "--include-assignments")
    )
    assert "2 removed" not in out  # favicon, user's and the token's assignments: 3 removed
    assert "3 removed" in out
    assert rules(app) == read_policy(app, path)
    assert Rule.of("g", "token:deploy", "user") not in rules(app)
    assert Rule.of("g", USER, "user") not in rules(app)


def test_replace_leaves_out_the_files_assignments_and_says_so(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = edited_rules(runner, tmp_path)
    path.write_text(path.read_text() + "g, dave@example.com, admin\n")
    before = assignments(app)
    result = invoke(runner, "policy", "load", str(path), "--replace")
    assert_ok(result)
    assert "note: 1 role assignment row(s) of the file left out" in result.stderr
    assert "--include-assignments" in result.stderr
    assert assignments(app) == before  # dave was not given admin by a rules deploy
    # A merge adds every row of the file, assignments included.
    assert_ok(invoke(runner, "policy", "load", str(path), "--merge"))
    assert Rule.of("g", "dave@example.com", "admin") in rules(app)


@pytest.mark.parametrize(
    ("flags", "wanted"),
    [
        pytest.param([], {"rules", "assignments"}, id="both"),
        pytest.param(["--rules-only"], {"rules"}, id="rules-only"),
        pytest.param(["--assignments-only"], {"assignments"}, id="assignments-only"),
    ],
)
def test_export_writes_either_part_or_both(
    with_token: Flask, runner: FlaskCliRunner, tmp_path: Path, flags: list[str], wanted: set[str]
) -> None:
    app = with_token
    path = export(runner, tmp_path / "out.csv", *flags)
    expected: list[Rule] = []
    if "rules" in wanted:
        expected += rules_part(app)
    if "assignments" in wanted:
        expected += assignments(app)
    assert read_policy(app, path) == sorted(expected)
    result = invoke(runner, "policy", "export", *flags)
    assert_ok(result)
    assert result.stdout == path.read_text(encoding="utf-8")


def test_exports_load_back_to_the_same_rows(
    with_token: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    app = with_token
    full = export(runner, tmp_path / "full.csv")
    only_rules = export(runner, tmp_path / "rules.csv", "--rules-only")
    original = rules(app)
    before = state(app)
    for path, flags in (
        (only_rules, ["--replace"]),
        (full, ["--replace", "--include-assignments"]),
    ):
        out = assert_ok(invoke(runner, "policy", "load", str(path), *flags))
        assert "0 added, 0 removed" in out
    assert state(app) == before

    # Drift in both parts, then restore each from its export.
    assert_ok(invoke(runner, "roles", "add", USER, "admin"))
    assert_ok(invoke(runner, "policy", "add", "p", "user", "/drift", "GET"))
    assert_ok(invoke(runner, "policy", "load", str(only_rules), "--replace"))
    assert Rule.of("p", "user", "/drift", "GET", "allow") not in rules(app)
    assert Rule.of("g", USER, "admin") in rules(app)  # a rules deploy keeps it
    assert_ok(invoke(runner, "policy", "load", str(full), "--replace", "--include-assignments"))
    assert rules(app) == original


# -- 2. flags that exclude each other are usage errors ------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["load", "{f}", "--merge", "--replace"], "exclude each other", id="merge+replace"
        ),
        pytest.param(
            ["load", "{f}", "--replace", "--merge"], "exclude each other", id="replace+merge"
        ),
        pytest.param(
            ["load", "{f}", "--include-assignments"], "goes with --replace", id="include-alone"
        ),
        pytest.param(
            ["load", "{f}", "--merge", "--allow-empty"], "goes with --replace", id="merge-empty"
        ),
        pytest.param(
            ["export", "--rules-only", "--assignments-only"], "exclude each other", id="export-both"
        ),
    ],
)
def test_conflicting_flags_are_usage_errors(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    path = edited_rules(runner, tmp_path)
    before = state(app)
    result = invoke(runner, "policy", *[a.replace("{f}", str(path)) for a in args])
    assert_clean(result)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output and message in result.output
    assert state(app) == before


# -- 3. an empty file is refused unless --replace --allow-empty ---------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  \n# and another\n"])
@pytest.mark.parametrize("flags", [[], ["--merge"], ["--replace"], ["--replace", "--dry-run"]])
def test_an_empty_file_is_refused(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, text: str, flags: list[str]
) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(text, encoding="utf-8")
    before = state(app)
    result = invoke(runner, "policy", "load", str(path), *flags)
    assert_clean(result)
    assert result.exit_code == 1
    assert f"Error: {path}: the file has no rows; nothing was changed" in result.output
    if "--replace" in flags:
        count = len(rules_part(app))
        assert f"--replace --allow-empty would remove {count} row(s)" in result.output
    assert state(app) == before


def test_a_replace_with_only_assignments_is_refused_as_empty(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(f"g, {ADMIN}, admin\n", encoding="utf-8")
    before = state(app)
    result = invoke(runner, "policy", "load", str(path), "--replace")
    assert result.exit_code == 1
    assert "no rules or role links (its 1 role assignment row(s) are left out)" in result.output
    assert state(app) == before


def test_replace_allow_empty_removes_the_rules_and_says_which(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("# nothing\n", encoding="utf-8")
    gone = rules_part(app)
    kept = assignments(app)
    before = state(app)
    # Nobody could open the editor after it: refused, by the dry run too.
    dry = invoke(runner, "policy", "load", str(path), "--replace", "--allow-empty", "--dry-run")
    assert dry.exit_code == 1
    assert f"- {'p, admin, /admin/*, .*, allow'}" in dry.stdout
    assert f"Error: dry run (nothing changed): the load would fail: {LOCKOUT}" in dry.output
    assert state(app) == before

    result = invoke(runner, "policy", "load", str(path), "--replace", "--allow-empty", "--force")
    assert_ok(result)
    removed = [line for line in result.stdout.splitlines() if line.startswith("- ")]
    assert len(removed) == len(gone)
    assert f"0 added, {len(gone)} removed" in result.stdout
    assert rules(app) == kept


# -- 4. a dry run runs every check a real load runs ----------------------------------------


def test_dry_run_predicts_a_lockout_refusal(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = edited_rules(runner, tmp_path)
    text = path.read_text().replace("p, admin, /admin/*, .*, allow\n", "")
    path.write_text(text, encoding="utf-8")
    before = state(app)
    dry = invoke(runner, "policy", "load", str(path), "--replace", "--dry-run")
    assert_clean(dry)
    assert dry.exit_code == 1
    assert "- p, admin, /admin/*, .*, allow" in dry.stdout  # the diff, then the refusal
    assert f"Error: dry run (nothing changed): the load would fail: {LOCKOUT}" in dry.output
    real = invoke(runner, "policy", "load", str(path), "--replace")
    assert real.exit_code == 1 and LOCKOUT in real.output
    assert state(app) == before
    # Forced, both pass.
    assert_ok(invoke(runner, "policy", "load", str(path), "--replace", "--dry-run", "--force"))
    assert state(app) == before
    assert_ok(invoke(runner, "policy", "load", str(path), "--replace", "--force"))
    assert Rule.of("p", "admin", "/admin/*", ".*", "allow") not in rules(app)


@pytest.mark.parametrize("flags", [[], ["--dry-run"]])
def test_a_cycle_with_the_tables_rows_names_the_file_line(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, flags: list[str]
) -> None:
    """``g, anonymous, admin`` closes admin -> user -> anonymous -> admin with stored rows."""
    path = tmp_path / "merge.csv"
    path.write_text("p, user, /x, GET\ng, anonymous, admin\n", encoding="utf-8")
    before = state(app)
    result = invoke(runner, "policy", "load", str(path), *flags)
    assert_clean(result)
    assert result.exit_code == 1
    assert f"Error: {path}: 1 bad line(s), nothing was changed" in result.output
    assert (
        "line 2: role: closes a role cycle with rows in the table: "
        "anonymous -> admin -> user -> anonymous (file line(s) 2; "
        "table: [g, admin, user], [g, user, anonymous])"
    ) in result.output
    assert state(app) == before


@pytest.mark.parametrize("flags", [["--replace"], ["--replace", "--dry-run"]])
def test_a_replace_whose_role_links_close_a_cycle_names_the_lines(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, flags: list[str]
) -> None:
    """A replace's role links all come from the file: the file's own lines are named."""
    path = edited_rules(runner, tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, "g, anonymous, admin", ""]), encoding="utf-8")
    linked = [n for n, text in enumerate(lines, start=1) if text.startswith("g, ")]
    before = state(app)
    result = invoke(runner, "policy", "load", str(path), *flags)
    assert result.exit_code == 1
    closing = len(lines) + 1
    numbers = ", ".join(map(str, [*linked, closing]))
    assert (
        f"line {closing}: role: closes a role cycle: admin -> user -> anonymous -> admin "
        f"(lines {numbers})"
    ) in result.output
    assert state(app) == before


def test_a_cycle_within_the_file_names_its_lines(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "cycle.csv"
    path.write_text("p, a, /a, GET\ng, a, b\np, b, /b, GET\ng, b, c\ng, c, a\n", encoding="utf-8")
    before = state(app)
    result = invoke(runner, "policy", "load", str(path), "--dry-run")
    assert result.exit_code == 1
    assert f"Error: {path}: 1 bad line(s), nothing was changed" in result.output
    assert "line 5: role: closes a role cycle: a -> b -> c -> a (lines 2, 4, 5)" in result.output
    assert state(app) == before


def test_dry_run_reports_invalid_rows_like_a_load(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("p, user, /ok, GET\np, user, /x, GET|(\n", encoding="utf-8")
    result = invoke(runner, "policy", "load", str(path), "--dry-run")
    assert result.exit_code == 1
    assert "line 2: act:" in result.output


# -- 5. a replace plans on a revision, and plans again when a write lands meanwhile --------


@pytest.fixture
def other_instance(app: Flask, tmp_path: Path) -> Iterator[Flask]:
    """A second instance of the service on the same database (another worker)."""
    other = create_app(app_config(tmp_path))
    yield other
    dispose(other)


@pytest.mark.parametrize("include", [False, True], ids=["rules", "include-assignments"])
def test_a_write_between_plan_and_apply_does_not_break_the_replace(
    app: Flask,
    runner: FlaskCliRunner,
    tmp_path: Path,
    other_instance: Flask,
    monkeypatch: pytest.MonkeyPatch,
    include: bool,
) -> None:
    path = edited_rules(runner, tmp_path)
    if include:
        path.write_text(path.read_text() + f"g, {ADMIN}, admin\n", encoding="utf-8")
    late_rule = Rule.of("p", "user", "/late", "GET", "allow")
    late_grant = Rule.of("g", "late@example.com", "user")
    real_plan = loading.plan
    plans: list[int] = []

    def plan_then_someone_writes(*args: Any, **kwargs: Any) -> loading.Plan:
        planned = real_plan(*args, **kwargs)
        plans.append(planned.revision)
        if len(plans) == 1:  # another instance writes after the plan, before the apply
            other = other_instance.extensions["authz"]
            other.apply(
                Change(add=(late_rule, late_grant), remove=(FAVICON,)), actor="t", source="api"
            )
        return planned

    monkeypatch.setattr(loading, "plan", plan_then_someone_writes)
    out = assert_ok(
        invoke(
            runner,
            "policy",
            "load",
            str(path),
            "--replace",
            *(["--include-assignments"] if include else []),
        )
    )
    assert len(plans) == 2 and plans[1] == plans[0] + 1  # planned again on the new revision
    if include:
        assert rules(app) == read_policy(app, path)  # the table equals the file
    else:
        assert rules_part(app) == read_policy(app, path)  # the rules equal the file's
        assert late_grant in rules(app)  # and an assignment given meanwhile is kept
    assert late_rule not in rules(app)
    assert "(replace)" in out
    entry = audit(app)[0]
    assert entry.action == "policy.load.replace"
    assert late_rule in entry.removed
    assert FAVICON not in entry.removed  # removed by the other write already


def test_a_replace_gives_up_after_a_few_stale_plans(
    app: Flask,
    runner: FlaskCliRunner,
    tmp_path: Path,
    other_instance: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = edited_rules(runner, tmp_path)
    real_plan = loading.plan
    plans: list[int] = []

    def plan_then_someone_always_writes(*args: Any, **kwargs: Any) -> loading.Plan:
        planned = real_plan(*args, **kwargs)
        plans.append(planned.revision)
        rule = Rule.of("p", "user", f"/busy/{len(plans)}", "GET", "allow")
        other_instance.extensions["authz"].apply(Change.adding(rule), actor="t", source="api")
        return planned

    monkeypatch.setattr(loading, "plan", plan_then_someone_always_writes)
    before = len(audit(app))
    result = invoke(runner, "policy", "load", str(path), "--replace")
    assert_clean(result)
    assert result.exit_code == 1
    assert "the policy changed since revision" in result.output
    assert len(plans) == loading.ATTEMPTS
    assert len(audit(app)) == before + loading.ATTEMPTS  # only the other instance's writes
    assert engine_of(app).rules()  # nothing of the load was written
    assert REPORTS not in rules(app)


def test_a_large_replace_is_staged_and_also_planned_again(
    app: Flask,
    runner: FlaskCliRunner,
    tmp_path: Path,
    other_instance: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A change of STAGE_FROM rows or more takes the engine's staged path: the revision
    it was planned on is checked there too."""
    from authz.engine import STAGE_FROM

    path = edited_rules(runner, tmp_path)
    many = "".join(f"p, user, /bulk/{i}, GET, allow\n" for i in range(STAGE_FROM + 10))
    path.write_text(path.read_text() + many, encoding="utf-8")
    late_rule = Rule.of("p", "user", "/late", "GET", "allow")
    real_plan = loading.plan
    plans: list[int] = []

    def plan_then_someone_writes(*args: Any, **kwargs: Any) -> loading.Plan:
        planned = real_plan(*args, **kwargs)
        plans.append(planned.revision)
        if len(plans) == 1:
            other_instance.extensions["authz"].apply(
                Change.adding(late_rule), actor="t", source="api"
            )
        return planned

    monkeypatch.setattr(loading, "plan", plan_then_someone_writes)
    out = assert_ok(invoke(runner, "policy", "load", str(path), "--replace"))
    assert f"{STAGE_FROM + 11} added, 2 removed" in out  # the late rule and the favicon
    # Stale once, applied (staged), then planned once more to find nothing left to write.
    assert len(plans) == 3
    assert rules_part(app) == read_policy(app, path)


def test_a_write_landing_while_a_large_replace_is_staged_is_replaced_too(
    app: Flask,
    runner: FlaskCliRunner,
    tmp_path: Path,
    other_instance: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The staged path keeps writes that land during staging; the load then plans again
    and writes what differs, so the rules still end equal to the file."""
    from authz.engine import STAGE_FROM

    path = edited_rules(runner, tmp_path)
    many = "".join(f"p, user, /bulk/{i}, GET, allow\n" for i in range(STAGE_FROM + 10))
    path.write_text(path.read_text() + many, encoding="utf-8")
    late_rule = Rule.of("p", "user", "/late", "GET", "allow")
    engine = app.extensions["authz"]
    real_commit = engine._commit_staged
    calls: list[int] = []

    def someone_writes_first(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            other_instance.extensions["authz"].apply(
                Change.adding(late_rule), actor="t", source="api"
            )
        calls.append(1)
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(engine, "_commit_staged", someone_writes_first)
    assert_ok(invoke(runner, "policy", "load", str(path), "--replace"))
    assert calls  # the change was staged
    assert late_rule not in rules(app)
    assert rules_part(app) == read_policy(app, path)
