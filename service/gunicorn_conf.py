"""gunicorn settings for production serving.

Use: ``gunicorn -c python:service.gunicorn_conf --bind 0.0.0.0:8000 'service:create_app()'``
(``authz serve --production`` runs exactly this). Options given on gunicorn's command line
win over the values here.

The settings are read once in the master, before any worker starts: a configuration error
is one line on stderr and exit status 3, and a generated development secret key is written
once rather than raced for by every worker.
"""

from __future__ import annotations

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
#: Each worker builds its own app: threads and database connections do not survive fork.
preload_app = False


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
