"""Settings: one prefix, typed values, clear errors, no default secret in production."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import service
from service.config import ConfigError
from service.config import Env
from service.config import load_settings
from service.config import shipped


def settings(tmp_path: Path, **env: str):  # noqa: ANN201 - test helper
    return load_settings(env, default_instance=tmp_path / "instance")


def test_defaults_use_sqlite_in_the_instance_folder_and_keep_a_generated_secret(
    tmp_path: Path,
) -> None:
    first = settings(tmp_path)
    assert first.env is Env.DEVELOPMENT
    assert first.database_url == f"sqlite:///{tmp_path / 'instance' / 'authz.db'}"
    assert len(first.secret_key) >= 32
    key_file = tmp_path / "instance" / "secret_key"
    assert key_file.read_text() == first.secret_key
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert settings(tmp_path).secret_key == first.secret_key  # kept, not regenerated


def test_values_are_parsed_and_typed(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        AUTHZ_DATABASE_URL="postgresql+psycopg://u@db/authz",
        AUTHZ_DEFAULT_ROLE="member",
        AUTHZ_POLL_INTERVAL="2.5",
        AUTHZ_SECURE_COOKIES="yes",
        AUTHZ_LOGIN_MAX_FAILURES="3",
    )
    assert s.database_url == "postgresql+psycopg://u@db/authz"
    assert s.default_role == "member"
    assert s.poll_interval == 2.5
    assert s.secure_cookies is True
    assert s.login_max_failures == 3
    assert s.to_flask_config()["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTHZ_DATABSE_URL": "sqlite://"}, "AUTHZ_DATABSE_URL: unknown setting"),
        ({"AUTHZ_ENV": "staging"}, "AUTHZ_ENV:"),
        ({"AUTHZ_DATABASE_URL": "not a url"}, "AUTHZ_DATABASE_URL: is not a database URL"),
        ({"AUTHZ_DEFAULT_ROLE": "Admin"}, "AUTHZ_DEFAULT_ROLE: must be a role name"),
        ({"AUTHZ_POLL_INTERVAL": "-1"}, "AUTHZ_POLL_INTERVAL: must not be negative"),
        ({"AUTHZ_POLL_INTERVAL": "soon"}, "AUTHZ_POLL_INTERVAL:"),
        ({"AUTHZ_SECURE_COOKIES": "maybe"}, "AUTHZ_SECURE_COOKIES: must be true or false"),
        ({"AUTHZ_MODEL_PATH": "/no/such/model.conf"}, "AUTHZ_MODEL_PATH: no such file"),
        ({"AUTHZ_LOGIN_WINDOW": "0"}, "AUTHZ_LOGIN_WINDOW: must be at least 1"),
    ],
)
def test_a_wrong_value_names_the_variable_and_the_reason(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **env)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_the_test_suites_own_variables_are_not_settings(tmp_path: Path) -> None:
    """AUTHZ_TEST_POSTGRES_URL (README "Development") points the suite at a server; the
    service it starts must not refuse it as a misspelt setting."""
    s = settings(tmp_path, AUTHZ_TEST_POSTGRES_URL="postgresql+psycopg://u@db/t")
    assert s.database_url.startswith("sqlite:")  # not a setting: the default stays
    with pytest.raises(ConfigError, match="AUTHZ_TESTS_URL: unknown setting"):
        settings(tmp_path, AUTHZ_TESTS_URL="x")


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "AUTHZ_SECRET_KEY"),
        ({"AUTHZ_SECRET_KEY": "x" * 40}, "AUTHZ_DATABASE_URL"),
        ({"AUTHZ_DATABASE_URL": "postgresql://db/authz"}, "AUTHZ_SECRET_KEY"),
    ],
)
def test_production_refuses_to_start_without_secret_and_database(
    tmp_path: Path, env: dict[str, str], missing: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{missing}: required when AUTHZ_ENV=production"):
        settings(tmp_path, AUTHZ_ENV="production", **env)
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_production_refuses_a_short_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32 characters"):
        settings(
            tmp_path,
            AUTHZ_ENV="production",
            AUTHZ_SECRET_KEY="short",
            AUTHZ_DATABASE_URL="postgresql://db/authz",
        )


def test_production_with_both_starts_with_secure_cookies(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        AUTHZ_ENV="production",
        AUTHZ_SECRET_KEY="k" * 40,
        AUTHZ_DATABASE_URL="postgresql://db/authz",
    )
    assert s.to_flask_config()["SESSION_COOKIE_SECURE"] is True


def test_dotenv_file_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("AUTHZ_DEFAULT_ROLE=reader\n")
    monkeypatch.chdir(tmp_path)
    assert "AUTHZ_DEFAULT_ROLE" not in os.environ
    try:
        s = load_settings(default_instance=tmp_path / "instance")
    finally:
        os.environ.pop("AUTHZ_DEFAULT_ROLE", None)  # load_dotenv exported it
    assert s.default_role == "reader"


# -- shipped files, serving and pool settings --------------------------------------------

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("shipped_name", "top_level"),
    [("model.conf", "model.conf"), ("default.csv", "policies/default.csv")],
)
def test_the_shipped_file_is_the_top_level_file_so_they_cannot_differ(
    shipped_name: str, top_level: str
) -> None:
    packaged = REPO / "service" / "shipped" / shipped_name
    # One source of truth: the package holds a symlink to the file people edit, and a
    # built wheel copies its content (tests/system/test_wheel.py checks the installed copy).
    assert packaged.is_symlink()
    assert packaged.resolve() == (REPO / top_level).resolve()
    assert not (REPO / top_level).is_symlink()


def test_defaults_are_the_files_inside_the_package(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert Path(s.model_path) == Path(shipped("model.conf"))
    assert Path(s.default_policy) == Path(shipped("default.csv"))
    assert Path(s.model_path).parent == Path(service.__file__).parent / "shipped"
    assert Path(s.model_path).read_text() == (REPO / "model.conf").read_text()


def test_model_and_default_policy_can_be_overridden(tmp_path: Path) -> None:
    model = tmp_path / "my-model.conf"
    model.write_text((REPO / "model.conf").read_text())
    policy = tmp_path / "my-policy.csv"
    policy.write_text("p, anonymous, /login, GET, allow\n")
    s = settings(tmp_path, AUTHZ_MODEL_PATH=str(model), AUTHZ_DEFAULT_POLICY=str(policy))
    assert (s.model_path, s.default_policy) == (str(model), str(policy))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[request_definition]\nr = sub, obj, act\n", "missing section"),
        ("not a model at all", "not a valid Casbin model"),
    ],
)
def test_a_model_file_that_is_not_a_model_is_a_configuration_error(
    tmp_path: Path, text: str, reason: str
) -> None:
    model = tmp_path / "broken.conf"
    model.write_text(text)
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, AUTHZ_MODEL_PATH=str(model))
    assert str(info.value).startswith("AUTHZ_MODEL_PATH: ")
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_serving_settings_default_and_parse(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert (s.workers, s.graceful_timeout, s.db_pool_size, s.db_max_overflow) == (2, 30, 5, 10)
    s = settings(
        tmp_path,
        AUTHZ_WORKERS="4",
        AUTHZ_GRACEFUL_TIMEOUT="10",
        AUTHZ_DB_POOL_SIZE="3",
        AUTHZ_DB_MAX_OVERFLOW="0",
    )
    assert (s.workers, s.graceful_timeout, s.db_pool_size, s.db_max_overflow) == (4, 10, 3, 0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTHZ_WORKERS": "0"}, "AUTHZ_WORKERS: must be at least 1"),
        ({"AUTHZ_GRACEFUL_TIMEOUT": "-5"}, "AUTHZ_GRACEFUL_TIMEOUT: must be at least 1"),
        ({"AUTHZ_DB_POOL_SIZE": "many"}, "AUTHZ_DB_POOL_SIZE:"),
        ({"AUTHZ_DB_MAX_OVERFLOW": "-1"}, "AUTHZ_DB_MAX_OVERFLOW: must not be negative"),
    ],
)
def test_bad_serving_settings_are_refused(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        settings(tmp_path, **env)


def test_a_server_database_gets_a_checked_pool_and_sqlite_none(tmp_path: Path) -> None:
    pg = settings(
        tmp_path, AUTHZ_DATABASE_URL="postgresql+psycopg://u@db/authz", AUTHZ_DB_POOL_SIZE="7"
    )
    options = pg.to_flask_config()["SQLALCHEMY_ENGINE_OPTIONS"]
    assert options == {"pool_pre_ping": True, "pool_size": 7, "max_overflow": 10}
    assert "SQLALCHEMY_ENGINE_OPTIONS" not in settings(tmp_path).to_flask_config()


def test_the_app_keeps_pool_settings_and_timeouts_together(tmp_path: Path) -> None:
    """The engine gets pool_pre_ping and pool sizes from settings and the timeouts beside them."""
    import pytest as _pytest

    from service import create_app
    from tests.conftest import dispose
    from tests.conftest import postgres_unreachable
    from tests.conftest import postgres_url

    url = postgres_url()
    reason = postgres_unreachable(url)
    if reason is not None:
        _pytest.skip(reason)
    app = create_app(
        {
            "env": "testing",
            "instance_path": str(tmp_path),
            "database_url": url,
            "secret_key": "x" * 40,
            "poll_interval": 0,
            "db_pool_size": 3,
        }
    )
    try:
        options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
        assert options["pool_pre_ping"] is True and options["pool_size"] == 3
        assert "statement_timeout" in options["connect_args"]["options"]
    finally:
        dispose(app)
