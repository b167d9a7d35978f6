"""gunicorn settings for production serving.

Use: ``gunicorn -c python:service.gunicorn_conf --bind 0.0.0.0:8000 'service:create_app()'``
(``authz serve --production`` runs exactly this). Options given on gunicorn's command line
win over the values here.

The settings are read once in the master, before any worker starts: a configuration error
is one line on stderr and exit status 3, and a generated development secret key is written
once rather than raced for by every worker.
"""

from __future__ import annotations

import gc
from typing import Any

from flask import Flask

from service.config import ConfigError
from service.config import exit_on_config_error
from service.config import load_settings

try:
    _settings = load_settings(
        # The same instance folder the app factory uses (site-packages installs:
        # <prefix>/var/service-instance; a checkout: ./instance).
        default_instance=Flask("service", instance_relative_config=True).instance_path
    )
except ConfigError as _error:
    exit_on_config_error(_error)

#: Worker processes; each holds its own policy snapshot and background threads.
workers = _settings.workers
#: After SIGTERM, workers finish their requests for up to this long, then are killed.
graceful_timeout = _settings.graceful_timeout
#: gunicorn 27's control socket has one default path per user, which several instances on
#: one host would fight over; turn it on with --control-socket PATH when wanted.
control_socket_disable = True
#: The master builds the app and loads the policy once, then forks the workers: they
#: share those pages (a million rows take hundreds of MB per copy). Threads and database
#: connections do not survive a fork: the master stops and closes its own before the
#: first fork (when_ready), and each worker starts its own (post_fork).
preload_app = _settings.preload


def _preloaded(server: Any) -> Flask | None:
    """The app the master built, when it preloads one."""
    if not server.cfg.preload_app:
        return None
    app = server.app.wsgi()
    return app if isinstance(app, Flask) else None


def when_ready(server: Any) -> None:
    """Before the first fork: stop the master's threads, close its connections, and move
    everything loaded so far out of the collector's reach (``gc.freeze``), so that a
    worker's collections do not write to the pages it shares with the others."""
    app = _preloaded(server)
    if app is None:
        return
    from service import before_fork

    before_fork(app)
    gc.collect()
    gc.freeze()
    engine = app.extensions["authz"]
    loaded = f"revision {engine.revision}" if engine.loaded else "not loaded"
    server.log.info("Policy loaded in the master (%s); workers share it", loaded)


def pre_fork(server: Any, worker: Any) -> None:
    """Freeze what the master allocated since (a worker replaced later forks from it too)."""
    if server.cfg.preload_app:
        gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    """In the new worker: its own database pool, decision ids and background threads."""
    app = _preloaded(server)
    if app is None:
        return
    from service import after_fork

    after_fork(app)


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the worker's revision poller and PostgreSQL listener as it leaves."""
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        from service import stop_background

        stop_background(app)
        server.log.info("Worker %s: policy poller and listener stopped", worker.pid)


def child_exit(server: Any, worker: Any) -> None:
    """Forget an exited worker's per-worker metrics (multiprocess mode)."""
    from service.metrics import child_exit as forget_worker

    forget_worker(server, worker)
