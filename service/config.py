"""Settings: every ``AUTHZ_*`` variable (and ``.env``), parsed once, checked at start."""

from __future__ import annotations

import enum
import os
import re
import secrets
import sys
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import fields
from importlib.resources import files
from pathlib import Path
from typing import Any
from typing import NoReturn

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: The repository root (in a checkout), where model.conf and policies/ are edited.
ROOT = Path(__file__).resolve().parent.parent
PREFIX = "AUTHZ_"
#: Variables of the test suite (e.g. AUTHZ_TEST_POSTGRES_URL), not settings of the service.
TEST_PREFIX = "AUTHZ_TEST_"
#: Exit status of every entry point (CLI, flask, gunicorn) on a configuration error.
CONFIG_ERROR_STATUS = 3


def shipped(name: str) -> str:
    """Return the path of a file shipped inside the package (``model.conf``, ``default.csv``).

    In a checkout ``service/shipped/`` holds symlinks to the top-level ``model.conf`` and
    ``policies/default.csv``; a built wheel holds copies of them, so an installed service
    finds its model and default policy wherever it runs from.
    """
    resource = files("service").joinpath("shipped", name)
    # Wheels install unzipped, so the resource is a real file; a zipped install is not
    # supported (Casbin and the CSV reader take paths).
    return str(Path(str(resource)))


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable and the reason."""


class Env(enum.StrEnum):
    """Where the service runs; production refuses generated secrets and default databases."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TESTING = "testing"


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _positive_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _days(value: str) -> float:
    number = float(value)
    # timedelta refuses infinity and NaN; a retention of zero would prune what is needed.
    if not 0 < number <= 36_500:
        raise ValueError("must be a number of days above 0 and at most 36500")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _role(value: str) -> str:
    from authz.rules import is_role

    if not is_role(value):
        raise ValueError("must be a role name ([a-z][a-z0-9_-]*)")
    return value


def _model_file(value: str) -> str:
    from authz.errors import AuthzError
    from authz.model import PolicyModel

    _existing_file(value)
    try:
        PolicyModel.from_file(value)
    except AuthzError as e:
        # Found at start, in one line, rather than as a traceback from the app factory.
        raise ValueError(str(e).replace("\n", " ")) from e
    return value


def _database_url(value: str) -> str:
    try:
        make_url(value)
    except ArgumentError as e:
        raise ValueError(f"is not a database URL ({e})") from e
    return value


def _existing_file(value: str) -> str:
    if not Path(value).is_file():
        raise ValueError(f"no such file: {value}")
    return value


def _networks(value: str) -> str:
    from service.proxies import parse_networks

    parse_networks(value)  # refuse a typo at start, not at the first request
    return value


def _choice(*allowed: str, upper: bool = False) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip().upper() if upper else value.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _public_url(value: str) -> str:
    from urllib.parse import urlsplit

    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("must be an http(s) URL such as https://authz.example.com")
    return value


def _mail_address(value: str) -> str:
    value = value.strip()
    if "@" not in value or any(c in value for c in "\r\n"):
        raise ValueError("must be an email address")
    return value


def _hosts(value: str) -> str:
    for host in value.split(","):
        host = host.strip()
        if host and not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", host):
            raise ValueError(f"{host!r} is not a host name (host or host:port)")
    return value


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("must be between 0 and 1")
    return number


#: The largest request body the service reads, in bytes (the check API's batches excepted).
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """The service configuration; built once by :func:`load_settings`, never mutated."""

    #: development, production or testing. Production requires SECRET_KEY and DATABASE_URL.
    env: Env = Env.DEVELOPMENT
    #: Any SQLAlchemy URL; default: SQLite file authz.db in the instance folder.
    database_url: str = ""
    #: Signs sessions and CSRF tokens; default (not in production): generated once and
    #: kept in the instance folder.
    secret_key: str = ""
    #: The Casbin model file.
    model_path: str = shipped("model.conf")
    #: The policy a fresh install gets (loaded when the policy table is empty).
    default_policy: str = shipped("default.csv")
    #: The policy tests a fresh install gets with it (empty: none).
    default_tests: str = shipped("default-tests.csv")
    #: gunicorn worker processes (service/gunicorn_conf.py, ``authz serve --production``).
    workers: int = 2
    #: Seconds gunicorn gives in-flight requests to finish after SIGTERM.
    graceful_timeout: int = 30
    #: gunicorn loads the app and the policy once, in the master, and forks the workers
    #: from it (they share the policy's memory); off: each worker loads its own.
    preload: bool = True
    #: Connections each process keeps open to a server database (not SQLite), and how
    #: many more it may open under load; connections are checked before use.
    db_pool_size: int = 5
    db_max_overflow: int = 10
    #: The role a newly registered account gets.
    default_role: str = "user"
    #: The role `db init` and `authz serve` give the first admin.
    admin_role: str = "admin"
    #: First admin for `db init`/`authz serve` (password generated and printed when unset).
    admin_email: str = ""
    admin_password: str = ""
    #: The request the lockout guard keeps reachable for at least one active user.
    editor_path: str = "/admin/"
    #: Seconds between policy revision checks (changes made by other instances); 0 = off.
    poll_interval: float = 0.5
    #: Failed logins per account before it must wait between attempts (see login_delay).
    login_max_failures: int = 5
    #: Seconds without a failed login after which an account's (or address's) count
    #: starts again from zero.
    login_window: int = 900
    #: Minimum password length for new passwords.
    password_min_length: int = 10
    #: argon2id cost parameters (time cost, memory in KiB, lanes).
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    argon2_parallelism: int = 4
    #: Send the session cookie over HTTPS only (default: on in production).
    secure_cookies: bool | None = None
    #: The folder for the SQLite database and the generated secret key.
    instance_path: str = ""
    # -- operations --
    #: Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For,
    #: -Proto, -Host and X-Request-ID headers are believed; default: none, not even loopback.
    trusted_proxies: str = ""
    #: Log lines as ``text`` or ``json`` (one JSON object per line).
    log_format: str = "text"
    #: The level of the service's own log lines (DEBUG, INFO, WARNING, ERROR).
    log_level: str = "INFO"
    #: Seconds /readyz waits for the database before calling it unavailable.
    ready_timeout: float = 2.0
    #: Seconds a worker may stay behind the database's revision before /readyz answers 503.
    ready_max_lag: float = 10.0
    #: Days each policy revision's change-log entry is kept: an instance behind by more
    #: than that (or whose entries were pruned) reads the whole policy instead.
    change_log_days: float = 7.0
    # -- database --
    #: Seconds to wait for a new database connection (PostgreSQL counts whole seconds,
    #: at least 2); 0 = the driver's default.
    db_connect_timeout: float = 5.0
    #: Seconds one statement may run, and a client waits for an answer (plus a second),
    #: before the request gets 503; on SQLite, how long to wait for another writer's
    #: lock. 0 = no limit.
    db_statement_timeout: float = 5.0
    # -- throttle --
    #: Seconds an account waits after its login_max_failures-th failure; doubled by each
    #: further failure, up to login_max_delay. A successful login clears it.
    login_delay: float = 1.0
    #: The longest wait, in seconds, for one account (or address, account pair).
    login_max_delay: float = 900.0
    #: Failed logins from one client address, any accounts, before it waits too (its own
    #: delay, doubling from login_delay up to login_address_max_delay). Not applied to
    #: an account logging in from an address it already logged in from.
    login_address_max_failures: int = 50
    #: The longest wait, in seconds, for one client address.
    login_address_max_delay: float = 60.0
    # -- sessions --
    #: Seconds a login session may go unused before it ends (default: 8 hours).
    session_idle: int = 8 * 3600
    #: Seconds a login session lasts at most, however busy (default: 30 days).
    session_absolute: int = 30 * 86400
    # -- accounts --
    #: Who may create an account: ``open`` (anyone, at /register), ``invite`` (only
    #: through an invitation link an admin sent) or ``closed`` (admins and the CLI only).
    registration: str = "open"
    #: Seconds an email verification link stays valid (default 48 hours).
    verify_max_age: int = 48 * 3600
    #: Seconds a password reset link stays valid (default 30 minutes).
    reset_max_age: int = 30 * 60
    #: Seconds an invitation link stays valid (default 7 days).
    invite_max_age: int = 7 * 24 * 3600
    #: The service's address as its users reach it (``https://authz.example.com``), for
    #: links in mail. Never taken from a request's Host header, which a client chooses.
    #: Unset: ``http://127.0.0.1:5000``, except in production, where no link is mailed
    #: (an error is logged) until it is set.
    public_url: str = ""
    #: ``dev`` (each message written to the log and to instance/mail/ as .eml) or ``smtp``.
    mail_backend: str = "dev"
    #: The SMTP server, its login (both empty: none), and STARTTLS before the login.
    mail_host: str = "localhost"
    mail_port: int = 25
    mail_username: str = ""
    mail_password: str = ""
    mail_starttls: bool = False
    #: The From address of the service's mail.
    mail_from: str = "authz@localhost"
    # -- other services --
    #: Hosts (comma-separated) besides this service's own that a login may send the
    #: browser back to (``next``), e.g. the sites protected through /auth/forward.
    login_hosts: str = ""
    #: Write decisions to the decision log: ``off``, ``sample`` (a fraction of them,
    #: decision_log_sample) or ``full``.
    decision_log: str = "off"
    #: The fraction of decisions written when decision_log is ``sample`` (0 to 1).
    decision_log_sample: float = 0.01
    #: Log the middleware's decisions too, not only the check API's and forward auth's.
    decision_log_middleware: bool = False
    #: The file the decision log is appended to; empty: the ``authz.decisions`` logger
    #: (standard error, like the service's other log lines).
    decision_log_file: str = ""

    def to_flask_config(self) -> dict[str, Any]:
        """Return the Flask config keys derived from these settings."""
        secure = (
            self.secure_cookies if self.secure_cookies is not None else (self.env is Env.PRODUCTION)
        )
        return {
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SESSION_COOKIE_HTTPONLY": True,
            "SESSION_COOKIE_SAMESITE": "Lax",
            "SESSION_COOKIE_SECURE": secure,
            # Over HTTPS the __Host- prefix makes browsers refuse the cookie unless it is
            # Secure, for path / and without a domain: no sibling subdomain, nor a plain
            # HTTP page of this host, can plant a session cookie (session fixation).
            "SESSION_COOKIE_NAME": "__Host-session" if secure else "session",
            "SESSION_COOKIE_PATH": "/",
            "SESSION_COOKIE_DOMAIN": None,
            # The cookie outlives no session: the server-side row ends it sooner.
            "PERMANENT_SESSION_LIFETIME": self.session_absolute,
            # Lifetimes are enforced on the server-side row, so the cookie need not be
            # re-signed and re-sent on every response (that cost a quarter of a request).
            "SESSION_REFRESH_EACH_REQUEST": False,
            "REMEMBER_COOKIE_SECURE": secure,
            "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
            # No form or JSON body of this service comes near 1 MiB; a larger one gets 413
            # before it is read (the check API raises its own cap for a batch).
            "MAX_CONTENT_LENGTH": MAX_BODY,
            "MAX_FORM_MEMORY_SIZE": MAX_BODY,
            "TESTING": self.env is Env.TESTING,
            **self._engine_options(),
        }

    def _engine_options(self) -> dict[str, Any]:
        if make_url(self.database_url).get_backend_name() == "sqlite":
            return {}  # one file, no server: nothing to pool or to ping
        return {
            "SQLALCHEMY_ENGINE_OPTIONS": {
                # A connection the server (or a proxy, or a failover) dropped while idle
                # is replaced before a request sees the error.
                "pool_pre_ping": True,
                "pool_size": self.db_pool_size,
                "max_overflow": self.db_max_overflow,
            }
        }


_PARSERS: dict[str, Callable[[str], Any]] = {
    "env": Env,
    "database_url": _database_url,
    "secret_key": str,
    "model_path": _model_file,
    "default_policy": _existing_file,
    "default_tests": lambda v: _existing_file(v) if v else "",
    "workers": _positive_int,
    "graceful_timeout": _positive_int,
    "preload": _bool,
    "db_pool_size": _positive_int,
    "db_max_overflow": _non_negative_int,
    "default_role": _role,
    "admin_role": _role,
    "admin_email": str,
    "admin_password": str,
    "editor_path": str,
    "poll_interval": _positive_float,
    "login_max_failures": _positive_int,
    "login_window": _positive_int,
    "password_min_length": _positive_int,
    "argon2_time_cost": _positive_int,
    "argon2_memory_cost": _positive_int,
    "argon2_parallelism": _positive_int,
    "secure_cookies": _bool,
    "instance_path": str,
    # -- operations --
    "trusted_proxies": _networks,
    "log_format": _choice("text", "json"),
    "log_level": _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True),
    "ready_timeout": _positive_float,
    "ready_max_lag": _positive_float,
    "change_log_days": _days,
    # -- database --
    "db_connect_timeout": _positive_float,
    "db_statement_timeout": _positive_float,
    # -- throttle --
    "login_delay": _positive_float,
    "login_max_delay": _positive_float,
    "login_address_max_failures": _positive_int,
    "login_address_max_delay": _positive_float,
    # -- sessions --
    "session_idle": _positive_int,
    "session_absolute": _positive_int,
    # -- accounts --
    "registration": _choice("open", "invite", "closed"),
    "verify_max_age": _positive_int,
    "reset_max_age": _positive_int,
    "invite_max_age": _positive_int,
    "public_url": _public_url,
    "mail_backend": _choice("dev", "smtp"),
    "mail_host": str,
    "mail_port": _positive_int,
    "mail_username": str,
    "mail_password": str,
    "mail_starttls": _bool,
    "mail_from": _mail_address,
    # -- other services --
    "login_hosts": _hosts,
    "decision_log": _choice("off", "sample", "full"),
    "decision_log_sample": _fraction,
    "decision_log_middleware": _bool,
    "decision_log_file": str,
}


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    default_instance: str | Path,
    dotenv: bool = True,
) -> Settings:
    """Build Settings from ``AUTHZ_*`` variables (and ``.env``); raise ConfigError on any fault.

    :param overrides: values by field name that win over the environment (tests).
    """
    if environ is None:
        if dotenv:
            from dotenv import load_dotenv

            load_dotenv(Path.cwd() / ".env", override=False)
        environ = os.environ
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(PREFIX) or key.startswith(TEST_PREFIX):
            continue  # AUTHZ_TEST_*: the test suite's own (README "Development")
        name = key[len(PREFIX) :].lower()
        if name not in names:
            # A misspelt variable would otherwise be silently ignored.
            raise ConfigError(f"{key}: unknown setting (known: {_known()})")
        try:
            values[name] = _PARSERS[name](raw)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from e
    for name, value in (overrides or {}).items():
        if name not in names:
            raise ConfigError(f"{name}: unknown setting")
        values[name] = value
    env = Env(values.get("env", Env.DEVELOPMENT))
    values["env"] = env
    instance = Path(values.get("instance_path") or default_instance)
    values["instance_path"] = str(instance)
    if env is Env.PRODUCTION:
        for name in ("secret_key", "database_url"):
            if not values.get(name):
                raise ConfigError(f"{PREFIX}{name.upper()}: required when AUTHZ_ENV=production")
        if len(values["secret_key"]) < 32:
            raise ConfigError(f"{PREFIX}SECRET_KEY: must be at least 32 characters in production")
    if not values.get("database_url"):
        values["database_url"] = f"sqlite:///{instance / 'authz.db'}"
    if not values.get("secret_key"):
        values["secret_key"] = _instance_secret(instance)
    return Settings(**values)


def exit_on_config_error(error: ConfigError) -> NoReturn:
    """Print a configuration error as one line on stderr and exit with status 3.

    Status 3 is what gunicorn's master takes as "worker failed to boot": it stops instead
    of restarting workers that would fail the same way.
    """
    print(f"Configuration error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_ERROR_STATUS)


def _instance_secret(instance: Path) -> str:
    """Return the secret key kept in the instance folder, generating it on first use."""
    path = instance / "secret_key"
    try:
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        instance.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key)
        return key
    except OSError as e:
        raise ConfigError(f"{PREFIX}SECRET_KEY: unset, and cannot keep one in {path}: {e}") from e


def _known() -> str:
    return ", ".join(PREFIX + f.name.upper() for f in fields(Settings))
