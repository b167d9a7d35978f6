"""Schema migrations (Alembic): bring any database of ours to the schema the code expects.

The scripts ship inside the package and are found from this file, so an installed wheel
upgrades a database from any directory. Databases made before migrations existed (the
0.1.0 ``db init``, which created the tables directly) are recognised and adopted at the
baseline revision, their rows kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from authz import AuthzError

#: The folder holding env.py and versions/.
LOCATION = Path(__file__).resolve().parent
#: The first revision: the schema of release 0.1.0.
BASELINE = "0001"
#: The tables the baseline creates; all of them present without ``alembic_version``
#: means a database made by the 0.1.0 ``db init``.
BASELINE_TABLES = frozenset(
    {"users", "login_failures", "casbin_rule", "policy_revision", "audit_log"}
)
#: Any number, fixed: concurrent upgrades of one PostgreSQL database take turns on it.
_LOCK_KEY = 0x617574687A  # "authz"


class MigrationError(AuthzError):
    """The database cannot be brought to the asked revision; the message says why.

    An ``AuthzError``, so every command (``db``, ``serve``) ends in one line with it.
    """


@dataclass(frozen=True)
class UpgradeReport:
    """What an upgrade did: the revision before (None: no schema) and after."""

    before: str | None
    after: str
    #: the database came from a release without migrations and was stamped at the baseline.
    adopted: bool = False

    @property
    def changed(self) -> bool:
        """Whether any migration ran (or the database was adopted)."""
        return self.adopted or self.before != self.after


def config(connection: sa.Connection | None = None) -> Config:
    """An Alembic configuration for our scripts, bound to ``connection`` when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(LOCATION))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def scripts() -> ScriptDirectory:
    """The revision scripts (read once per process)."""
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The revision the code expects."""
    revision = scripts().get_current_head()
    assert revision is not None, "no migration scripts shipped"
    return revision


def current(connection: sa.Connection) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def target_metadata() -> sa.MetaData:
    """Every table the code uses, in one MetaData: what the migrations must produce."""
    from authz.store import metadata as policy_metadata
    from authz.store import rule_table
    from service import models  # noqa: F401 - registers the account tables on db.metadata
    from service.extensions import db

    combined = sa.MetaData()
    for table in [*db.metadata.sorted_tables, rule_table, *policy_metadata.sorted_tables]:
        table.to_metadata(combined)
    return combined


def upgrade(engine: sa.Engine, revision: str = "head") -> UpgradeReport:
    """Upgrade the database to ``revision`` in one transaction (SQLite and PostgreSQL).

    A database with the baseline's tables but no ``alembic_version`` (made by release
    0.1.0) is stamped at the baseline first, so its rows stay and later revisions apply.
    """
    _known(revision, "no such revision", "name a revision this release ships, or head")
    with engine.begin() as connection:
        # Two instances upgrading at once take turns; the second finds nothing to do.
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
        elif connection.dialect.name == "sqlite":
            # The sqlite3 module runs DDL outside any transaction unless told; take the
            # write lock now, so the whole upgrade commits or rolls back as one.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        before = current(connection)
        if before is not None:
            # Code older than the database (a rollback after an upgrade) must not guess.
            _known(
                before,
                "the database is at a revision this release does not know",
                "run the release that made it, or restore a backup",
            )
        adopted = False
        if before is None:
            present = set(sa.inspect(connection).get_table_names()) & BASELINE_TABLES
            if present == BASELINE_TABLES:
                command.stamp(config(connection), BASELINE)
                adopted = True
            # Some of them only (an interrupted first start): the baseline creates
            # the missing ones and keeps the others.
        if current(connection) != head() or revision != "head":
            try:
                command.upgrade(config(connection), revision)
            except CommandError as e:  # e.g. a target below the current revision
                raise MigrationError(f"cannot upgrade to {revision!r}: {e}") from e
        after = current(connection)
    assert after is not None
    return UpgradeReport(before, after, adopted)


def known(revision: str) -> bool:
    """Whether ``revision`` names one of our scripts (or ``head``/``base``)."""
    try:
        scripts().get_revisions(revision)
    except CommandError:
        return False
    return True


def _known(revision: str, problem: str, remedy: str) -> None:
    if not known(revision):
        raise MigrationError(
            f"{problem}: {revision!r} (this release knows up to {head()}); {remedy}"
        )


def pending(engine: sa.Engine) -> bool:
    """Whether the database is behind the code (or has no schema yet)."""
    with engine.connect() as connection:
        return current(connection) != head()
