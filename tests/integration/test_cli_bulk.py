"""Large loads and exports as the ``authz`` script runs them: a load plans on the stored
rows and an export streams them, neither loading the policy up front; a load refused by
validation or the guard writes nothing, however large.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

from authz import PolicyEngine
from authz import Rule
from authz import csvio
from authz.engine import STAGE_FROM
from authz.store import rule_table
from service.cli import cli
from tests.conftest import FAST_HASHING
from tests.integration.test_cli import LOCKOUT
from tests.integration.test_cli import assert_clean
from tests.integration.test_cli import assert_ok
from tests.integration.test_cli import audit
from tests.integration.test_cli import engine_of
from tests.integration.test_cli import invoke
from tests.integration.test_cli import rules
from tests.integration.test_cli import state


def script(app: Flask, *args: str) -> Result:
    """Run ``authz ARGS`` as the console script does: it builds its own app."""
    settings = app.config["AUTHZ"]
    env = {
        "AUTHZ_ENV": "testing",
        "AUTHZ_INSTANCE_PATH": settings.instance_path,
        "AUTHZ_DATABASE_URL": settings.database_url,
        "AUTHZ_SECRET_KEY": "test-secret-key",
        "AUTHZ_POLL_INTERVAL": "0",
        **{f"AUTHZ_{k.upper()}": str(v) for k, v in FAST_HASHING.items()},
    }
    return CliRunner().invoke(cli, list(args), env=env, prog_name="authz")


@pytest.fixture
def no_full_load(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count full policy loads (the snapshot built from every stored row)."""
    loads: list[int] = []
    real = PolicyEngine.load

    def counted(self: PolicyEngine) -> None:
        loads.append(1)
        real(self)

    monkeypatch.setattr(PolicyEngine, "load", counted)
    return loads


def bulk_rows(n: int) -> str:
    return "".join(f"p, user, /bulk/{i}/*, GET, allow\n" for i in range(n))


def test_the_script_exports_the_snapshots_bytes_without_loading_the_policy(
    app: Flask, tmp_path: Path, no_full_load: list[int]
) -> None:
    expected = csvio.export(engine_of(app).rules())
    no_full_load.clear()
    out = tmp_path / "out.csv"
    assert_ok(script(app, "policy", "export", str(out)))
    assert out.read_text(encoding="utf-8") == expected
    assert not no_full_load
    assert not list(tmp_path.glob(".out.csv.partial"))
    assert_ok(result := script(app, "policy", "export", "--assignments-only"))
    only = [r for r in engine_of(app).rules() if r.ptype == "g" and "@" in r.values[0]]
    assert result.stdout == csvio.export(only)


def test_the_script_loads_a_large_file_then_reloads_it_as_a_no_op(
    app: Flask, tmp_path: Path, no_full_load: list[int]
) -> None:
    path = tmp_path / "big.csv"
    path.write_text(bulk_rows(STAGE_FROM + 10), encoding="utf-8")
    entries = len(audit(app))
    no_full_load.clear()
    out = assert_ok(script(app, "policy", "load", str(path)))
    assert f"{STAGE_FROM + 10} added, 0 removed" in out
    assert "risks analysed for the first" not in out  # fewer rows than are analysed
    out = assert_ok(script(app, "policy", "load", str(path)))
    assert "0 added, 0 removed" in out
    assert not no_full_load  # planned on the stored rows; a snapshot only for the write
    assert len(audit(app)) == entries + 1  # the no-op wrote no audit entry
    stored = rules(app)
    assert all(Rule.of("p", "user", f"/bulk/{i}/*", "GET", "allow") in stored for i in range(5))


def test_the_script_dry_run_decides_on_the_loaded_policy(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_text("p, user, /reports/*, GET, allow\n", encoding="utf-8")
    before = state(app)
    out = assert_ok(script(app, "policy", "load", "--dry-run", str(path)))
    assert "+ p, user, /reports/*, GET, allow" in out
    assert state(app) == before


def test_a_large_load_refused_by_the_guard_writes_nothing(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "rules.csv"
    assert_ok(invoke(runner, "policy", "export", str(path), "--rules-only"))
    text = path.read_text(encoding="utf-8").replace("p, admin, /admin/*, .*, allow\n", "")
    path.write_text(text + bulk_rows(STAGE_FROM + 10), encoding="utf-8")
    before = state(app)
    for run in (
        lambda: invoke(runner, "policy", "load", str(path), "--replace"),
        lambda: script(app, "policy", "load", str(path), "--replace"),
    ):
        result = run()
        assert_clean(result)
        assert result.exit_code == 1 and LOCKOUT in result.output
        assert state(app) == before


def test_a_large_file_with_one_bad_line_is_refused_by_line_and_writes_nothing(
    app: Flask, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    path.write_text(bulk_rows(STAGE_FROM + 10) + "p, user, /x, GET, maybe\n", encoding="utf-8")
    before = state(app)
    result = script(app, "policy", "load", str(path))
    assert_clean(result)
    assert result.exit_code == 1 and f"line {STAGE_FROM + 11}" in result.output
    assert state(app) == before


def test_an_export_leaves_out_a_stored_row_the_engine_would_not_use(
    app: Flask, tmp_path: Path
) -> None:
    bad: dict[str, Any] = {"ptype": "p", "v0": "user", "v1": "/x", "v2": "GET", "v3": "maybe"}
    with app.app_context():
        from service.extensions import db

        with db.engine.begin() as conn:
            conn.execute(sa.insert(rule_table).values(**bad))
    out = tmp_path / "out.csv"
    result = script(app, "policy", "export", str(out))
    assert_ok(result)
    assert "1 stored row(s) left out" in result.output
    assert "maybe" not in out.read_text(encoding="utf-8")
    assert csvio.parse(out.read_text(encoding="utf-8"), engine_of(app).model).rules
