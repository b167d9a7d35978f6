"""Alembic's entry point for our scripts: run them on the connection we are handed.

``service.migrations.upgrade`` passes a connection in ``config.attributes``; run on its
own (``alembic`` with ``script_location`` pointing here) it uses the app's database.
"""

from __future__ import annotations

from typing import TypedDict

import sqlalchemy as sa
from alembic import context

from service.migrations import target_metadata

config = context.config


class Options(TypedDict):
    """The options every run passes to ``context.configure`` (typed for its keywords)."""

    target_metadata: sa.MetaData
    compare_type: bool
    render_as_batch: bool


OPTIONS: Options = {
    "target_metadata": target_metadata(),
    "compare_type": True,
    # SQLite alters tables by copying them; batch mode does that for later revisions.
    "render_as_batch": True,
}


def run_offline() -> None:
    """Print the SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the scripts on the given connection, or on the app's database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return
    from service import create_app
    from service.extensions import db

    with create_app().app_context(), db.engine.begin() as own:
        context.configure(connection=own, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
