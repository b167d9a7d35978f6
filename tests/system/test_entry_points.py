"""Every entry point reports a configuration error in one line; ``--help`` has no side effects.

Real processes: the ``authz`` script, ``flask --app service`` and gunicorn (with and without
the shipped config module), each started with a bad setting in the environment.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from service.config import CONFIG_ERROR_STATUS
from tests.system.conftest import BIN
from tests.system.conftest import assert_one_line
from tests.system.conftest import clean_env
from tests.system.conftest import free_port

GUNICORN = [str(BIN / "gunicorn"), "--no-control-socket"]
GUNICORN_CONF = [*GUNICORN, "-c", "python:service.gunicorn_conf"]

ENTRY_POINTS = {
    "authz-script": [str(BIN / "authz"), "users", "list"],
    "authz-serve": [str(BIN / "authz"), "serve", "--port", "{port}"],
    "authz-serve-production": [str(BIN / "authz"), "serve", "--production", "--port", "{port}"],
    "flask-routes": [str(BIN / "flask"), "--app", "service", "routes"],
    "flask-run": [str(BIN / "flask"), "--app", "service", "run", "--port", "{port}"],
    "gunicorn-bare": [*GUNICORN, "--bind", "127.0.0.1:{port}", "service:create_app()"],
    "gunicorn-conf": [*GUNICORN_CONF, "--bind", "127.0.0.1:{port}", "service:create_app()"],
}

BAD_SETTINGS = {
    "unknown": ({"AUTHZ_DATABSE_URL": "sqlite://"}, "AUTHZ_DATABSE_URL: unknown setting"),
    "workers": ({"AUTHZ_WORKERS": "none"}, "AUTHZ_WORKERS: invalid literal"),
    "production-secret": ({"AUTHZ_ENV": "production"}, "AUTHZ_SECRET_KEY: required"),
    "model": ({"AUTHZ_MODEL_PATH": "{tmp}/broken.conf"}, "AUTHZ_MODEL_PATH: "),
}


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("bad", BAD_SETTINGS)
def test_a_bad_setting_is_one_line_and_status_3_under_every_entry_point(
    tmp_path: Path, entry: str, bad: str
) -> None:
    (tmp_path / "broken.conf").write_text("[request_definition]\nr = sub, obj, act\n")
    settings, message = BAD_SETTINGS[bad]
    env = clean_env(
        AUTHZ_INSTANCE_PATH=str(tmp_path / "instance"),
        **{k: v.format(tmp=tmp_path) for k, v in settings.items()},
    )
    argv = [part.format(port=free_port()) for part in ENTRY_POINTS[entry]]
    result = run(argv, tmp_path, env)
    assert result.returncode == CONFIG_ERROR_STATUS, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # Our line is the only one on stderr that is not gunicorn's own timestamped log.
    ours = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert_one_line("\n".join(ours), f"Configuration error: {message}")
    if entry == "gunicorn-conf":
        # The config module stops the master before any worker starts: nothing else.
        assert_one_line(result.stderr, f"Configuration error: {message}")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["db", "--help"],
        ["db", "init", "--help"],
        ["users", "create", "--help"],
        ["policy", "load", "--help"],
        ["serve", "--help"],
        [],
    ],
)
def test_help_creates_no_file_and_builds_no_app(tmp_path: Path, args: list[str]) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    # A bad setting proves the app is never built: building it would exit with status 3.
    env = clean_env(AUTHZ_INSTANCE_PATH=str(tmp_path / "instance"), AUTHZ_BOGUS="1")
    result = run([str(BIN / "authz"), *args], work, env)
    assert result.returncode in (0, 2), result.stderr  # click: bare group prints usage, 2
    assert "Usage: authz" in result.stdout + result.stderr
    assert "Configuration error" not in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]
    assert list(work.iterdir()) == []


def test_first_start_prints_only_the_commands_own_lines(tmp_path: Path) -> None:
    env = clean_env(AUTHZ_INSTANCE_PATH=str(tmp_path / "instance"))
    before_init = run([str(BIN / "authz"), "users", "list"], tmp_path, env)
    # No "policy not loaded ... 503" warning from the app factory, just the command's error.
    assert_one_line(before_init.stderr, "Error: the database is unreachable or not initialised")
    assert before_init.stdout == ""
    init = run([str(BIN / "authz"), "db", "init"], tmp_path, env)
    assert init.returncode == 0, init.stderr
    assert init.stderr == ""
    assert init.stdout.startswith("Schema upgraded from empty to revision")
    assert "Database ready; default policy loaded" in init.stdout
    listed = run([str(BIN / "authz"), "users", "list"], tmp_path, env)
    assert listed.returncode == 0 and listed.stderr == ""
