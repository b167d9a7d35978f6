"""The Flask application: every request decided by the policy engine."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask import current_app
from flask import g

from authz import LockoutGuard
from authz import PolicyEngine
from authz import PolicyModel
from authz import PolicyStore
from authz import connections
from authz.connections import Timeouts
from authz.connections import engine_options
from authz.errors import AuthzError
from authz.sync import PostgresListener
from authz.sync import RevisionPoller
from service import converters
from service import decisionlog
from service import headers
from service import health
from service import logs
from service import metrics
from service import middleware
from service import nav
from service import proxies
from service import responses
from service import sessions
from service import tokens
from service import users
from service.config import ConfigError
from service.config import Env
from service.config import Settings
from service.config import exit_on_config_error
from service.config import load_settings
from service.extensions import csrf
from service.extensions import db
from service.extensions import login_manager
from service.passwords import Passwords


def create_app(test_config: Mapping[str, Any] | None = None, *, load_policy: bool = True) -> Flask:
    """Build the app; ``test_config`` overrides settings by field name (tests).

    Called without ``test_config`` (``flask --app service``, gunicorn
    ``'service:create_app()'``), a configuration error ends the process with one line on
    stderr and status 3 instead of a traceback; tests get the ConfigError.

    :param load_policy: load the policy and start following its changes; a command that
        reads the policy from the database itself (``policy export``) skips both.
    """
    app = Flask(__name__, instance_relative_config=True)
    try:
        settings = load_settings(overrides=test_config, default_instance=app.instance_path)
    except ConfigError as e:
        if test_config is not None:
            raise
        exit_on_config_error(e)
    app.config.from_mapping(settings.to_flask_config())
    app.config["AUTHZ"] = settings
    logs.init_app(app, settings)
    register_extensions(app, settings)
    register_engine(app, settings, load_policy=load_policy)
    decisionlog.init_app(
        app,
        settings.decision_log,
        settings.decision_log_sample,
        settings.decision_log_middleware,
        settings.decision_log_file,
    )
    middleware.init_app(app)
    converters.init_app(app)
    register_blueprints(app)
    nav.init_app(app)
    from service.api.decisions import allow_large_bodies

    app.before_request_funcs.setdefault(None, []).insert(0, allow_large_bodies)
    responses.register_error_handlers(app)
    headers.init_app(app)
    register_cli(app)
    register_operations(app, settings)
    return app


def register_extensions(app: Flask, settings: Settings) -> None:
    """Bind the database, login manager, CSRF protection and password hasher."""
    timeouts = Timeouts(settings.db_connect_timeout, settings.db_statement_timeout)
    # Pool settings (from Settings) and timeouts (from authz.connections), both kept.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
        **engine_options(settings.database_url, timeouts),
    }
    db.init_app(app)
    with app.app_context():
        connections.install(db.engine, timeouts)
        if db.engine.dialect.name == "sqlite":
            _tune_sqlite(db.engine, timeouts)
    app.session_interface = sessions.CookieSessions()
    login_manager.init_app(app)
    # Sessions are ended server-side by rotating the account's token; Flask-Login's
    # address/agent fingerprint would add a hash per request and no protection.
    login_manager.session_protection = None
    login_manager.user_loader(sessions.load)
    # CSRF protects cookie sessions; a bearer request carries no cookie, so nothing to
    # forge. Flask-WTF's own check cannot tell them apart: it is replaced by one that does.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    app.before_request(_csrf_unless_bearer)
    app.extensions["authz.passwords"] = Passwords(
        settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism
    )


def _csrf_unless_bearer() -> None:
    """Check the CSRF token of unsafe requests, except those authenticated by a token."""
    if g.get("authz_token") is not None or not current_app.config["WTF_CSRF_ENABLED"]:
        return
    csrf.protect(apply_exemptions=True)


def register_engine(app: Flask, settings: Settings, *, load_policy: bool = True) -> None:
    """Build the policy engine into ``app.extensions["authz"]`` and try to load the policy."""
    with app.app_context():
        store = PolicyStore(db.engine, change_log_days=settings.change_log_days)
    engine = metrics.MeasuredEngine(
        PolicyModel.from_file(settings.model_path),
        store,
        guard=LockoutGuard(path=settings.editor_path, method="GET"),
        active_subjects=users.active_subjects,
        is_active=users.is_active,
        # A worker owns its process; tests and development share theirs with more.
        freeze_gc=settings.env is Env.PRODUCTION,
    )
    app.extensions["authz"] = engine
    if not load_policy:
        return
    try:
        engine.load()
    except Exception as e:  # noqa: BLE001 - the service starts and answers 503 until it can load
        if _not_initialised(e):
            # A fresh install: expected before the first `db init`, not alarming.
            app.logger.info("database not initialised; run `authz db init`")
        else:
            app.logger.warning(
                "policy not loaded (%s); until it loads requests get 503 "
                "(a new database needs `db init`, which `authz serve` runs)",
                e,
            )
    if settings.poll_interval > 0:
        # Changes made by other instances (and the CLI) arrive through the revision poll;
        # session lookups are cached only when that poll runs to invalidate them.
        poller = RevisionPoller(engine, settings.poll_interval)
        poller.start()
        app.extensions["authz.poller"] = poller
        app.extensions["authz.sessions"] = sessions.SessionCache(engine, settings.poll_interval)
        app.extensions["authz.tokens"] = tokens.TokenCache(engine, settings.poll_interval)
        if store.engine.dialect.name == "postgresql":
            listener = PostgresListener(engine)
            listener.start()
            app.extensions["authz.listener"] = listener


def stop_background(app: Flask) -> None:
    """Stop the app's revision poller and database listener and close its connections.

    gunicorn's ``worker_exit`` hook (service/gunicorn_conf.py) calls this, so a worker
    leaving on SIGTERM or a reload ends its threads and LISTEN connection cleanly.
    """
    for name in ("authz.listener", "authz.poller"):
        worker = app.extensions.get(name)
        if worker is not None:
            worker.stop()
    log = app.extensions.get("authz.decisions")
    if log is not None:
        log.close()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def before_fork(app: Flask) -> None:
    """Leave a preloaded app fit to fork: no thread running, no connection open.

    gunicorn with ``preload_app`` (service/gunicorn_conf.py) builds the app, and loads
    the policy, once in the master; the workers it forks share those pages. A thread
    does not survive a fork (one holding a lock would leave it held in the child), and
    a connection shared by two processes mixes their conversations, so the master stops
    its poller and listener and closes its connections before the first fork; each
    worker starts its own (after_fork).
    """
    for name in ("authz.listener", "authz.poller"):
        worker = app.extensions.get(name)
        if worker is not None:
            # Until it has stopped: a refresh still running (a full read of a large
            # policy) would hold the engine's locks in every worker forked meanwhile.
            # Every statement it runs has a deadline (authz.connections).
            worker.stop(timeout=None)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def after_fork(app: Flask) -> None:
    """In a worker forked from a preloaded master: a pool, ids and threads of its own."""
    with app.app_context():
        # close=False: the child drops what it inherited without closing the parent's
        # sockets (before_fork closed them in the master already; this is the safety net).
        db.engine.dispose(close=False)
    log = app.extensions.get("authz.decisions")
    if log is not None:
        log.after_fork()
    engine: PolicyEngine = app.extensions["authz"]
    engine.after_fork()
    # The master stopped following the policy when it forked its first worker; a worker
    # forked later (one replacing a worker that died or timed out) starts from that old
    # snapshot. It catches up before serving, or serves nothing: a revoked permission
    # must not come back for the time of a poll.
    try:
        engine.refresh()
    except AuthzError as e:
        logging.getLogger("authz.sync").warning(
            "a new worker could not bring the policy up to date (%s); it answers 503 "
            "until its poll reads it",
            e,
        )
        engine.forget()
    for name in ("authz.poller", "authz.listener"):
        worker = app.extensions.get(name)
        if worker is not None:
            worker.start()


def _not_initialised(error: BaseException) -> bool:
    """Whether a load failed only because the policy tables do not exist yet."""
    cause: BaseException | None = error
    while cause is not None:
        orig = getattr(cause, "orig", None)
        if orig is not None:
            # PostgreSQL undefined_table; SQLite says it in words.
            return getattr(orig, "sqlstate", None) == "42P01" or "no such table" in str(orig)
        cause = cause.__cause__
    return False


def register_blueprints(app: Flask) -> None:
    """Plug in the pages."""
    from service.admin.views import bp as admin_bp
    from service.api import bp as api_bp
    from service.auth.views import bp as auth_bp
    from service.pages import bp as pages_bp

    app.register_blueprint(pages_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(api_bp)


def register_operations(app: Flask, settings: Settings) -> None:
    """Add /healthz, /readyz, /metrics, request ids and the trusted proxies."""
    health.init_app(app)
    metrics.init_app(app)
    logs.init_request_ids(app)
    # Outermost: the request id and everything after it see the real client.
    proxies.init_app(app, settings.trusted_proxies)


def register_cli(app: Flask) -> None:
    """Add the db, users, roles and policy command groups."""
    from service.cli import register

    register(app)


def _tune_sqlite(engine: sa.Engine, timeouts: Timeouts) -> None:
    # WAL lets the service read while the CLI writes; busy_timeout waits for the lock,
    # as long as a statement may take and no longer.
    busy = int(timeouts.statement * 1000) if timeouts.statement > 0 else 3_600_000

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy}")
        cursor.close()
