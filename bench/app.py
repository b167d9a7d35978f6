"""The service as benchmarked: two trivial pages, with and without the middleware."""

from __future__ import annotations

from flask import Flask

from service import create_app


def _add_pages(app: Flask) -> Flask:
    @app.get("/bench/ok")
    def bench_ok() -> str:
        return "ok"

    @app.get("/bench/denied")
    def bench_denied() -> str:
        return "not for you"

    return app


def create_bench_app() -> Flask:
    """The service with two trivial pages (configured from AUTHZ_* as usual)."""
    return _add_pages(create_app())


def create_bare_app() -> Flask:
    """The same app with the authorization hook removed: the baseline."""
    app = _add_pages(create_app())
    app.before_request_funcs[None].remove(app.extensions["authz.middleware"])
    return app
