"""Policy storage: rule rows, the policy revision, the change log and the audit log, in one
transaction.

Rule rows live in the SQLAlchemy adapter's ``casbin_rule`` table. The adapter commits
each write in a session of its own, so it cannot share a transaction with the audit
entry and the revision bump; we therefore read and write that table ourselves. We also
read it ourselves: the adapter re-parses each row from a comma-joined string, which
splits values that contain a comma, and goes row by row where one query will do.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import secrets
import sqlite3
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import TypeVar
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy_adapter.adapter import CasbinRule

from authz.rules import Rule

metadata = sa.MetaData()
T = TypeVar("T")


def _database_errors() -> tuple[type[Exception], ...]:
    found: list[type[Exception]] = [SQLAlchemyError, sqlite3.Error]
    try:
        import psycopg
    except ImportError:  # PostgreSQL support is optional
        pass
    else:
        found.append(psycopg.Error)
    return tuple(found)


#: Everything a database call can raise when the database fails: SQLAlchemy's errors
#: and the drivers' own, which raw cursors raise unwrapped.
DATABASE_ERRORS: tuple[type[Exception], ...] = _database_errors()


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A point in time stored as naive UTC and read back as aware UTC, on every database.

    SQLite keeps no time zone, so comparing an aware value written in another zone with
    stored wall-clock strings would be wrong; normalising on the way in and out is not.
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: sa.Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: sa.Dialect
    ) -> dt.datetime | None:
        return value.replace(tzinfo=dt.UTC) if value is not None else None


#: The adapter's table: ptype plus six value columns, unused ones NULL.
rule_table: sa.Table = CasbinRule.__table__
VALUE_COLUMNS = ("v0", "v1", "v2", "v3", "v4", "v5")
#: A row is edited or removed by its values: without this, by reading every row
#: (hundreds of milliseconds at a million rows). Migration 0008.
RULE_VALUES_INDEX = "ix_casbin_rule_v0_v1"
if RULE_VALUES_INDEX not in {index.name for index in rule_table.indexes}:
    sa.Index(RULE_VALUES_INDEX, rule_table.c.v0, rule_table.c.v1)

revision_table = sa.Table(
    "policy_revision",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("changed_at", UTCDateTime, nullable=False),
    #: Bumped when sessions must be re-checked (deactivation, password change, logout),
    #: so instances that cache session lookups drop them.
    sa.Column("accounts", sa.Integer, nullable=False, default=0, server_default="0"),
)

audit_table = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(255), nullable=False, index=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("added", sa.Text, nullable=False),
    sa.Column("removed", sa.Text, nullable=False),
    sa.Column("forced", sa.Boolean, nullable=False, default=False),
    sa.Column("revision", sa.Integer, nullable=False, index=True),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)

#: Each policy revision's added and removed rows, so an instance that is behind applies
#: the revisions it missed instead of reading every row again (see PolicyEngine.refresh).
#: Written in the transaction that bumps the revision; pruned after a retention period.
change_table = sa.Table(
    "policy_change",
    metadata,
    sa.Column("revision", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    #: Random, per entry; ``parent`` is the token of the entry before it. A database
    #: restored from a backup and written again reuses revision numbers, not tokens.
    sa.Column("token", sa.String(32), nullable=False),
    sa.Column("parent", sa.String(32), nullable=True),
    #: Distinct stored rows after the change (None: not known to the writer).
    sa.Column("row_count", sa.Integer, nullable=True),
    #: Rows added plus rows removed; the rows themselves are not kept past LOG_ROWS.
    sa.Column("size", sa.Integer, nullable=False),
    #: False for a change too large to keep row by row: readers load everything.
    sa.Column("complete", sa.Boolean, nullable=False),
    sa.Column("added", sa.Text, nullable=False),
    sa.Column("removed", sa.Text, nullable=False),
)
#: Policy tests (authz.expectations): one promise per request, checked on every write.
expectation_table = sa.Table(
    "policy_expectation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("path", sa.String(255), nullable=False),
    sa.Column("outcome", sa.String(8), nullable=False),
    sa.Column("note", sa.Text, nullable=False, default="", server_default=""),
    sa.UniqueConstraint("subject", "method", "path", name="uq_policy_expectation_request"),
)
#: An expectation as stored: (id, subject, method, path, outcome, note).
StoredExpectation = tuple[int, str, str, str, str, str]
#: A change of more rows than this is logged as a marker only (readers load everything).
LOG_ROWS = 10_000
#: Every this many revisions a write prunes the change log, at most PRUNE_BATCH entries
#: (more than it grows meanwhile), so pruning stays cheap and bounded.
PRUNE_EVERY = 16
PRUNE_BATCH = 100


@dataclass(frozen=True)
class LoggedChange:
    """One revision's entry in the change log, rows as stored (not yet validated)."""

    revision: int
    token: str
    parent: str | None
    row_count: int | None
    complete: bool
    added: tuple[Rule, ...]
    removed: tuple[Rule, ...]


class BadLogEntry(ValueError):
    """A change-log entry that cannot be read as rows."""


#: Rows of a large change, staged on one connection before the write lock is taken.
_staging = sa.MetaData()
stage_add_table = sa.Table(
    "authz_stage_add",
    _staging,
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("id", sa.Integer),
    *(sa.Column(c.name, c.type) for c in rule_table.c if c.name != "id"),
    prefixes=["TEMPORARY"],
)
stage_remove_table = sa.Table(
    "authz_stage_remove", _staging, sa.Column("id", sa.Integer), prefixes=["TEMPORARY"]
)
#: Rows per statement while staging: each batch is one short statement.
STAGE_BATCH = 10_000
#: Rows per COPY statement (PostgreSQL) while staging, and per statement when the staged
#: rows move into the rule table: seconds at most, under any statement timeout.
STAGE_MOVE = 100_000


@dataclass(frozen=True)
class AuditEntry:
    """One audited change: who, when, from where, and the rows before and after."""

    actor: str
    source: str
    action: str
    added: tuple[Rule, ...] = ()
    removed: tuple[Rule, ...] = ()
    forced: bool = False
    detail: str = ""
    revision: int = 0
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    id: int | None = None


def audit_values(entry: AuditEntry) -> dict[str, Any]:
    """The audit_log column values of an entry (for a large change, made before the lock)."""
    return {
        "at": entry.at,
        "actor": entry.actor,
        "source": entry.source,
        "action": entry.action,
        # Tuples encode to the same JSON arrays as lists, in half the time (a bulk load
        # audits a million rows).
        "added": json.dumps([(r.ptype, *r.values) for r in entry.added]),
        "removed": json.dumps([(r.ptype, *r.values) for r in entry.removed]),
        "forced": entry.forced,
        "revision": entry.revision,
        "detail": entry.detail,
    }


def now() -> dt.datetime:
    """Return the current time in UTC."""
    return dt.datetime.now(dt.UTC)


class PolicyStore:
    """Reads and writes policy rows, the revision and the audit log through one engine."""

    def __init__(self, engine: Engine, *, change_log_days: float = 7.0) -> None:
        self.engine = engine
        #: How long change-log entries are kept (the latest one always is).
        self.change_log_retention = dt.timedelta(days=change_log_days)

    def create_schema(self) -> None:
        """Create the tables that are missing and the revision row; idempotent."""
        with self.engine.begin() as conn:
            rule_table.create(conn, checkfirst=True)
            metadata.create_all(conn)
            if conn.execute(sa.select(revision_table.c.id)).first() is None:
                conn.execute(
                    revision_table.insert().values(id=1, revision=0, accounts=0, changed_at=now())
                )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session whose work commits together or not at all."""
        with Session(self.engine) as session, session.begin():
            yield session

    def revision(self) -> int:
        """Return the current policy revision (one cheap query)."""
        return self.revisions()[0]

    def revisions(self) -> tuple[int, int]:
        """Return (policy revision, accounts revision) in one cheap query."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(revision_table.c.revision, revision_table.c.accounts).where(
                    revision_table.c.id == 1
                )
            ).first()
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    @staticmethod
    def notify(session: Session) -> None:
        """Wake other instances when this transaction commits (PostgreSQL only)."""
        if session.get_bind().dialect.name == "postgresql":
            session.execute(sa.text("SELECT pg_notify('authz_policy', '')"))

    @staticmethod
    def bump_accounts(session: Session) -> None:
        """Record that sessions must be re-checked everywhere."""
        session.execute(
            revision_table.update()
            .where(revision_table.c.id == 1)
            .values(accounts=revision_table.c.accounts + 1)
        )

    @classmethod
    def accounts_changed(cls, session: Session) -> None:
        """Record that sessions must be re-checked, and wake other instances at commit."""
        cls.bump_accounts(session)
        cls.notify(session)

    @classmethod
    def current_revision(cls, session: Session) -> int:
        """Return the policy revision as this transaction sees it (no lock taken)."""
        return cls._read_revision(session)

    def load(self) -> tuple[int, list[Rule]]:
        """Return the revision and every rule row, read in one consistent transaction."""
        revision, rules, _ids = self.load_rows()
        return revision, rules

    def load_rows(self) -> tuple[int, list[Rule], list[int]]:
        """Return the revision, every rule row and each row's database id (same order)."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # READ COMMITTED gives each statement its own view; the revision and the
                # rows must come from one.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                revision = self._read_revision(conn)
                rules, ids = self.read_rows(conn)
                return revision, rules, ids

    @staticmethod
    def _read_revision(conn: sa.Connection | Session) -> int:
        value = conn.execute(sa.select(revision_table.c.revision).where(revision_table.c.id == 1))
        row = value.first()
        return int(row[0]) if row is not None else 0

    @staticmethod
    def read_rules(conn: sa.Connection | Session) -> list[Rule]:
        """Return every rule row in insertion order, in one query."""
        return PolicyStore.read_rows(conn)[0]

    @staticmethod
    def read_rows(conn: sa.Connection | Session) -> tuple[list[Rule], list[int]]:
        """Return every rule row in insertion order and, alongside, each row's id.

        One query. Values that repeat (role names, methods, effects) share one string
        object, which keeps a large policy small in memory. Rows are returned as stored,
        whatever their length: the caller validates them.
        """
        connection = conn.connection() if isinstance(conn, Session) else conn
        # The driver's own cursor, on the same connection and transaction: for a large
        # policy this read is most of the load time, and SQLAlchemy's row layer doubles it.
        columns = ", ".join(["id", "ptype", *VALUE_COLUMNS])
        sql = f"SELECT {columns} FROM {rule_table.name} ORDER BY id"  # noqa: S608 - constant names
        result = _raw_rows(connection, sql)
        shared: dict[str, str] = {}
        share = shared.setdefault
        rules: list[Rule] = []
        ids: list[int] = []
        append = rules.append
        append_id = ids.append
        for row_id, ptype, v0, v1, v2, v3, v4, v5 in result:
            append_id(row_id)
            if v4 is None and v3 is not None and v5 is None:  # the common p row: four values
                values: tuple[str, ...] = (share(v0, v0), v1, share(v2, v2), share(v3, v3))
            elif v2 is None and v1 is not None and v3 is None and v4 is None and v5 is None:
                # The common g row: two values; the member shares its string with its own
                # p rows' subject (one object per account, not two).
                values = (share(v0, v0), share(v1, v1))
            else:
                raw = [v0, v1, v2, v3, v4, v5]
                while raw and raw[-1] is None:
                    raw.pop()
                values = tuple(raw)
            append(Rule(share(ptype, ptype), values))
        return rules, ids

    def stream_rules(
        self, order: Callable[[Iterable[str]], list[str]], *, batch: int = 10_000
    ) -> Iterator[Rule]:
        """Yield every distinct rule row as stored, type by type in ``order``, each type
        in insertion order; read ``batch`` rows at a time (a server-side cursor on
        PostgreSQL). No row is held once yielded: memory does not grow with the rows but
        for one hash per row (about 70 MB a million), which finds rows stored twice.

        :param order: the row types present, in the order to read them.
        """
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                sql = f"SELECT DISTINCT ptype FROM {rule_table.name}"  # noqa: S608 - constant
                found = [row[0] for row in _raw_fetchall(conn, sql) if row[0] is not None]
                mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
                columns = ", ".join(VALUE_COLUMNS)
                sql = (
                    f"SELECT id, {columns} FROM {rule_table.name} "  # noqa: S608 - constants
                    f"WHERE ptype = {mark} ORDER BY id"
                )
                same = "IS" if conn.dialect.name == "sqlite" else "IS NOT DISTINCT FROM"
                earlier = (
                    f"SELECT 1 FROM {rule_table.name} WHERE ptype = {mark} AND id < {mark} "  # noqa: S608
                    + "".join(f"AND {c} {same} {mark} " for c in VALUE_COLUMNS)
                    + "LIMIT 1"
                )
                seen: set[int] = set()
                for ptype in order(found):
                    for row_id, *values in _raw_stream(conn, sql, (ptype,), batch):
                        # Rows stored twice are one row of the policy: written once, at
                        # the first. A hash seen before is checked exactly (hashes collide).
                        key = hash((ptype, *values))
                        if key in seen and _raw_fetchall(conn, earlier, (ptype, row_id, *values)):
                            continue
                        seen.add(key)
                        while values and values[-1] is None:
                            values.pop()
                        yield Rule(ptype, tuple(values))

    def lock_revision(self, session: Session) -> int:
        """Take the write lock on the revision row and return the current revision."""
        # The no-op UPDATE takes the row lock (PostgreSQL) or the database write lock
        # (SQLite) so that concurrent writers serialize here rather than interleave.
        session.execute(
            revision_table.update()
            .where(revision_table.c.id == 1)
            .values(revision=revision_table.c.revision)
        )
        return self._read_revision(session)

    @staticmethod
    def set_revision(session: Session, revision: int) -> None:
        """Record a new revision number."""
        session.execute(
            revision_table.update()
            .where(revision_table.c.id == 1)
            .values(revision=revision, changed_at=now())
        )

    @staticmethod
    def insert_rules(session: Session, rules: Iterable[Rule]) -> None:
        """Insert rule rows."""
        rows = [
            {
                "ptype": r.ptype,
                **{
                    c: (r.values[i] if i < len(r.values) else None)
                    for i, c in enumerate(VALUE_COLUMNS)
                },
            }
            for r in rules
        ]
        if rows:
            session.execute(rule_table.insert(), rows)

    @staticmethod
    def delete_rules(session: Session, rules: Iterable[Rule]) -> None:
        """Delete rule rows equal to the given rules."""
        for r in rules:
            conds = [rule_table.c.ptype == r.ptype]
            for i, c in enumerate(VALUE_COLUMNS):
                col = rule_table.c[c]
                conds.append(col == r.values[i] if i < len(r.values) else col.is_(None))
            session.execute(rule_table.delete().where(*conds))

    @staticmethod
    def read_expectations(conn: sa.Connection | Session) -> list[StoredExpectation]:
        """Every stored expectation, in the order they were added (one query, read on the
        driver's own cursor: every policy write reads them all)."""
        connection = conn.connection() if isinstance(conn, Session) else conn
        sql = (
            "SELECT id, subject, method, path, outcome, note "  # noqa: S608 - constant names
            f"FROM {expectation_table.name} ORDER BY id"
        )
        return [
            (int(r[0]), r[1], r[2], r[3], r[4], r[5] or "") for r in _raw_fetchall(connection, sql)
        ]

    def expectations(self) -> list[StoredExpectation]:
        """Every stored expectation (outside any write)."""
        with self.engine.connect() as conn:
            return self.read_expectations(conn)

    @staticmethod
    def insert_expectations(session: Session, items: Iterable[Sequence[str]]) -> None:
        """Insert expectations given as (subject, method, path, outcome, note)."""
        rows = [
            {"subject": s, "method": m, "path": p, "outcome": o, "note": n}
            for s, m, p, o, n in items
        ]
        if rows:
            session.execute(expectation_table.insert(), rows)

    @staticmethod
    def delete_expectations(session: Session, requests: Iterable[Sequence[str]]) -> None:
        """Delete the expectations of these (subject, method, path) requests."""
        t = expectation_table
        for subject, method, path in requests:
            session.execute(
                t.delete().where(t.c.subject == subject, t.c.method == method, t.c.path == path)
            )

    @staticmethod
    def insert_audit(session: Session, entry: AuditEntry | dict[str, Any]) -> int:
        """Append an audit entry (or the column values :func:`audit_values` made of one).

        Return its id.
        """
        values = entry if isinstance(entry, dict) else audit_values(entry)
        inserted = session.execute(audit_table.insert().values(**values))
        result = cast("sa.CursorResult[Any]", inserted)
        key = result.inserted_primary_key
        assert key is not None  # a single-row INSERT always reports its key
        return int(key[0])

    @staticmethod
    def update_audit(session: Session, entry_id: int, values: dict[str, Any]) -> None:
        """Rewrite an audit entry of this transaction (a change rebased before commit)."""
        session.execute(audit_table.update().where(audit_table.c.id == entry_id).values(**values))

    def record_change(
        self,
        session: Session,
        revision: int,
        added: tuple[Rule, ...],
        removed: tuple[Rule, ...],
        *,
        row_count: int | None,
        marker: bool = False,
    ) -> str:
        """Log a revision's rows in the write's own transaction; return the entry's token.

        A change of more than LOG_ROWS rows, or one the caller marks (``marker``), is
        logged as a marker without its rows (readers load everything). Entries past the
        retention are pruned every PRUNE_EVERY revisions, a bounded number, never the one
        before this revision.
        """
        # One round trip: the entry before (the parent), and any at or past this revision.
        found = session.execute(
            sa.select(change_table.c.revision, change_table.c.token).where(
                change_table.c.revision >= revision - 1
            )
        ).all()
        parent = next((str(t) for r, t in found if r == revision - 1), None)
        if any(r >= revision for r, _t in found):
            # Entries that outlived their revision: the database went back (restored from
            # a backup, or rolled back by hand) and its revisions are written again.
            session.execute(change_table.delete().where(change_table.c.revision >= revision))
        size = len(added) + len(removed)
        complete = size <= LOG_ROWS and not marker
        token = secrets.token_hex(8)
        session.execute(
            change_table.insert().values(
                revision=revision,
                at=now(),
                token=token,
                parent=parent,
                row_count=row_count,
                size=size,
                complete=complete,
                added=_rows_json(added) if complete else "[]",
                removed=_rows_json(removed) if complete else "[]",
            )
        )
        if revision % PRUNE_EVERY == 0:
            self.prune_changes(session, keep_from=revision - 1)
        return token

    def prune_changes(self, session: Session, *, keep_from: int) -> int:
        """Delete up to PRUNE_BATCH entries older than the retention; return how many.

        :param keep_from: entries of this revision and later stay whatever their age (the
            latest entry is what the next one's ``parent`` is checked against).
        """
        cutoff = now() - self.change_log_retention
        old = (
            sa.select(change_table.c.revision)
            .where(change_table.c.at < cutoff, change_table.c.revision < keep_from)
            .order_by(change_table.c.revision)
            .limit(PRUNE_BATCH)
        )
        doomed = list(session.execute(old).scalars())
        if doomed:
            session.execute(change_table.delete().where(change_table.c.revision.in_(doomed)))
        return len(doomed)

    def change_token_of(self, revision: int) -> str | None:
        """The token of a revision's change-log entry, or None when it has none."""
        with self.engine.connect() as conn:
            token = conn.execute(
                sa.select(change_table.c.token).where(change_table.c.revision == revision)
            ).scalar()
        return None if token is None else str(token)

    def read_changes(
        self,
        since: int,
        until: int,
        *,
        max_revisions: int,
        max_rows: int,
        session: Session | None = None,
    ) -> list[LoggedChange] | None:
        """The change-log entries of revisions ``since``+1 to ``until``, in order.

        None when they cannot bring a snapshot of ``since`` up to ``until``: the log has a
        gap (pruned, or a revision written without an entry), an entry is only a marker
        (a large change), or there are more than ``max_revisions`` entries or
        ``max_rows`` rows to apply (reading everything is then as cheap).

        :raises BadLogEntry: when an entry's rows cannot be read.
        """
        if until <= since or until - since > max_revisions:
            return None
        span = (change_table.c.revision > since, change_table.c.revision <= until)
        if session is not None:
            return self._read_changes(session, since, until, span, max_rows)
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return self._read_changes(conn, since, until, span, max_rows)

    @staticmethod
    def _read_changes(
        conn: sa.Connection | Session,
        since: int,
        until: int,
        span: tuple[Any, ...],
        max_rows: int,
    ) -> list[LoggedChange] | None:
        # The cheap columns first: whether the entries are whole and small enough.
        sizes = conn.execute(
            sa.select(change_table.c.revision, change_table.c.size, change_table.c.complete)
            .where(*span)
            .order_by(change_table.c.revision)
        ).all()
        if [int(r[0]) for r in sizes] != list(range(since + 1, until + 1)):
            return None  # a gap: pruned, or written by something that keeps no log
        if not all(r[2] for r in sizes) or sum(int(r[1]) for r in sizes) > max_rows:
            return None
        rows = conn.execute(
            sa.select(
                change_table.c.revision,
                change_table.c.token,
                change_table.c.parent,
                change_table.c.row_count,
                change_table.c.added,
                change_table.c.removed,
            )
            .where(*span)
            .order_by(change_table.c.revision)
        ).all()
        if [int(r[0]) for r in rows] != list(range(since + 1, until + 1)):
            return None  # pruned between the two reads (no repeatable read on this path)
        return [
            LoggedChange(
                revision=int(revision),
                token=str(token),
                parent=parent,
                row_count=None if count is None else int(count),
                complete=True,
                added=_parse_rows(added),
                removed=_parse_rows(removed),
            )
            for revision, token, parent, count, added, removed in rows
        ]

    def changes_between(
        self, session: Session, since: int, until: int, *, exclude: int | None = None
    ) -> list[tuple[tuple[Rule, ...], tuple[Rule, ...]]] | None:
        """The (added, removed) rows of revisions ``since``+1 to ``until``, in order.

        Read from the change log, in the caller's transaction. None when that record is
        not whole (a gap, a large change logged as a marker, a database restored to an
        older revision, an unreadable entry): the caller must read the rows themselves.

        :param exclude: ignored (the id of the caller's own audit entry, which the audit
            log held uncommitted; the change log holds no entry of the caller's yet).
        """
        if until < since:
            return None
        if until == since:
            return []
        try:
            changes = self.read_changes(
                since, until, max_revisions=until - since, max_rows=LOG_ROWS, session=session
            )
        except BadLogEntry:
            return None
        if changes is None:
            return None
        return [(c.added, c.removed) for c in changes]

    @contextmanager
    def staging(self) -> Iterator[Staging]:
        """Yield a connection of its own on which a large change can be staged."""
        with self.engine.connect() as conn:
            staging = Staging(conn)
            try:
                yield staging
            finally:
                staging.drop()

    def audit_entries(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        actor: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[AuditEntry]:
        """Return audit entries, newest first, filtered by actor and time."""
        query = sa.select(audit_table).order_by(audit_table.c.id.desc())
        if actor:
            query = query.where(audit_table.c.actor == actor)
        if since:
            query = query.where(audit_table.c.at >= since)
        if until:
            query = query.where(audit_table.c.at < until)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).mappings().all()
        return [_entry(row) for row in rows]

    def audit_since(
        self, revision: int, *, max_text: int | None = None, limit: int = 1000
    ) -> list[AuditEntry]:
        """Return the entries of changes after ``revision``, oldest first, at most ``limit``.

        :param max_text: only entries whose rows take at most this many characters (the
            small edits of editors, not bulk loads), so what is read stays bounded.
        """
        query = sa.select(audit_table).where(audit_table.c.revision > revision)
        if max_text is not None:
            size = sa.func.length(audit_table.c.added) + sa.func.length(audit_table.c.removed)
            query = query.where(size <= max_text)
        query = query.order_by(audit_table.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [_entry(row) for row in conn.execute(query).mappings()]


def _rows_json(rules: Iterable[Rule]) -> str:
    return json.dumps([r.as_list() for r in rules])


def _parse_rows(text: str) -> tuple[Rule, ...]:
    """Rows from a change-log entry; BadLogEntry unless every one is a list of strings."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise BadLogEntry(f"not JSON: {e}") from e
    if not isinstance(raw, list):
        raise BadLogEntry("not a list of rows")
    rules = []
    for row in raw:
        if not (isinstance(row, list) and len(row) >= 2 and all(isinstance(v, str) for v in row)):
            raise BadLogEntry(f"not a row: {row!r}")
        rules.append(Rule(row[0], tuple(row[1:])))
    return tuple(rules)


def _entry(row: sa.RowMapping) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        actor=row["actor"],
        source=row["source"],
        action=row["action"],
        added=tuple(Rule(v[0], tuple(v[1:])) for v in json.loads(row["added"])),
        removed=tuple(Rule(v[0], tuple(v[1:])) for v in json.loads(row["removed"])),
        forced=bool(row["forced"]),
        revision=row["revision"],
        detail=row["detail"],
    )


#: Rows fetched from the driver at a time: a million rows fetched at once leave hundreds
#: of MB of freed tuples and strings behind, which the allocator keeps (RSS stays up).
FETCH_BATCH = 10_000


def _raw_rows(connection: sa.Connection, sql: str) -> Iterator[Any]:
    """The rows of ``sql``, FETCH_BATCH at a time (PostgreSQL: a server-side cursor, where
    a client cursor would hold the whole result in the driver's memory first)."""
    return _raw_stream(connection, sql, (), FETCH_BATCH)


def _raw_fetchall(
    connection: sa.Connection, sql: str, params: tuple[Any, ...] | None = None
) -> list[Any]:
    """Run ``sql`` on the driver's own cursor; driver errors come out as SQLAlchemy's.

    SQLAlchemy wraps the errors of the statements it runs, and drops a connection that
    failed with a disconnect; a raw cursor gets neither, so both are done here. Callers
    then handle one family of errors, whichever way a statement was run.
    """

    def fetch(cursor: Any) -> list[Any]:
        cursor.execute(sql, params) if params is not None else cursor.execute(sql)
        return list(cursor.fetchall())

    return _raw(connection, sql, fetch)


def _raw_stream(
    connection: sa.Connection, sql: str, params: tuple[Any, ...], batch: int
) -> Iterator[tuple[Any, ...]]:
    """Yield the rows of ``sql``, fetched ``batch`` at a time (PostgreSQL: server-side)."""
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None  # an open Connection always holds one
    server_side = connection.dialect.name == "postgresql"

    def open_cursor(_cursor: Any) -> Any:
        if server_side:
            named: Any = dbapi_connection.cursor(name="authz_stream")
            named.itersize = batch
        else:
            named = dbapi_connection.cursor()
        named.execute(sql, params)
        return named

    cursor = _raw(connection, sql, open_cursor)
    try:
        while True:
            rows = _raw(connection, sql, lambda _c: cursor.fetchmany(batch))
            if not rows:
                return
            yield from rows
    finally:
        cursor.close()


def _raw(connection: sa.Connection, sql: str, work: Callable[[Any], T]) -> T:
    """Run ``work(cursor)`` on a driver cursor of ``connection``; errors as SQLAlchemy's."""
    dialect = connection.dialect
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None  # an open Connection always holds one
    cursor = None
    try:
        cursor = dbapi_connection.cursor()
        result = work(cursor)
        cursor.close()
        return result
    except dialect.loaded_dbapi.Error as e:
        invalidated = dialect.is_disconnect(e, dbapi_connection, cursor)
        if invalidated:
            connection.invalidate(e)
        raise DBAPIError.instance(
            sql,
            None,
            e,
            dialect.loaded_dbapi.Error,
            connection_invalidated=invalidated,
            dialect=dialect,
        ) from e


def bulk_insert(
    conn: sa.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
) -> int:
    """Insert many rows into ``table``, a batch per statement and transaction; return how many.

    PostgreSQL: ``COPY ... FROM STDIN`` (psycopg writes each value in COPY's text format,
    escaping tabs, newlines and backslashes; None is NULL). Other databases:
    ``executemany`` of STAGE_BATCH rows. Rows are taken from ``rows`` as they are sent.
    """
    names = ", ".join(columns)
    copy = conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"
    if copy:
        sql = f"COPY {table} ({names}) FROM STDIN"
        batch = STAGE_MOVE
    else:
        marks = ", ".join("?" if conn.dialect.paramstyle == "qmark" else "%s" for _ in columns)
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"  # noqa: S608 - our names
        batch = STAGE_BATCH
    source = iter(rows)
    count = 0
    while True:
        chunk = list(itertools.islice(source, batch))
        if not chunk:
            return count
        with conn.begin():
            if copy:

                def send(cursor: Any, chunk: list[Sequence[object]] = chunk) -> None:
                    with cursor.copy(sql) as stream:
                        for row in chunk:
                            stream.write_row(row)

                _raw(conn, sql, send)
            else:

                def many(cursor: Any, chunk: list[Sequence[object]] = chunk) -> None:
                    cursor.executemany(sql, chunk)

                _raw(conn, sql, many)
        count += len(chunk)


class Staging:
    """A large change's rows, written ahead into temporary tables of one connection.

    Filling them takes as long as the change is large, and holds no lock other writers
    wait for (temporary tables are private to the connection; on SQLite they live in a
    database of their own). Under the write lock, :meth:`apply` then moves them into
    the rule table with one statement each way.
    """

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._created = False
        #: The rows may go in before the write lock (their ids are drawn ahead).
        self.early = False
        self._inserted = False
        #: How many rows were staged to insert (their seqs are 0 to count - 1).
        self._count = 0

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session on the staging connection whose work commits together."""
        self._inserted = False
        with Session(bind=self.conn) as session, session.begin():
            yield session

    def fill(self, add: Sequence[Rule], remove_ids: Sequence[int]) -> None:
        """Stage rows to insert (in order) and the ids of rows to delete, in batches.

        PostgreSQL takes them by ``COPY``, SQLite by ``executemany``: a batch per
        statement, each its own short transaction, and no list of every row's values.
        """
        self.drop()
        with self.conn.begin():
            stage_add_table.create(self.conn)
            stage_remove_table.create(self.conn)
            self._created = True
        ids = self._new_ids(len(add))
        self.early = ids is not None
        self._count = len(add)
        rows: Iterator[tuple[object, ...]] = (
            (seq, ids[seq] if ids is not None else None, r.ptype, *_padded(r))
            for seq, r in enumerate(add)
        )
        columns = ["seq", "id", "ptype", *VALUE_COLUMNS]
        bulk_insert(self.conn, stage_add_table.name, columns, rows)
        bulk_insert(self.conn, stage_remove_table.name, ["id"], ((i,) for i in remove_ids))

    def _new_ids(self, count: int) -> list[int] | None:
        """Row ids drawn ahead from the rule table's sequence (PostgreSQL), else None.

        With their ids known, the rows can go into the rule table before the write
        lock is taken: uncommitted, nobody sees them, and nobody else can touch them.
        """
        if self.conn.dialect.name != "postgresql" or count == 0:
            return None
        with self.conn.begin():
            sequence = self.conn.execute(
                sa.text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": rule_table.name}
            ).scalar()
            if sequence is None:
                return None
            drawn = _raw_fetchall(
                self.conn,
                "SELECT nextval(%s) FROM generate_series(1, %s)",
                (sequence, count),
            )
            return [row[0] for row in drawn]

    def unstage(self, session: Session, seqs: list[int]) -> None:
        """Drop staged rows to insert, by their position in the staged order."""
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            if self.early and self._inserted:
                staged = sa.select(stage_add_table.c.id).where(stage_add_table.c.seq.in_(chunk))
                session.execute(rule_table.delete().where(rule_table.c.id.in_(staged)))
            session.execute(stage_add_table.delete().where(stage_add_table.c.seq.in_(chunk)))

    def insert(self, session: Session) -> None:
        """Insert the staged rows into the rule table, in the staged order.

        One statement per STAGE_MOVE rows: each stays well inside the statement timeout.
        """
        columns = ["id", "ptype", *VALUE_COLUMNS] if self.early else ["ptype", *VALUE_COLUMNS]
        seq = stage_add_table.c.seq
        for start in range(0, self._count, STAGE_MOVE):
            session.execute(
                rule_table.insert().from_select(
                    columns,
                    sa.select(*(stage_add_table.c[c] for c in columns))
                    .where(seq >= start, seq < start + STAGE_MOVE)
                    .order_by(seq),
                )
            )
        self._inserted = True

    def apply(self, session: Session) -> None:
        """Delete the staged ids and insert the staged rows (unless in already)."""
        session.execute(
            rule_table.delete().where(
                rule_table.c.id.in_(sa.select(stage_remove_table.c.id).scalar_subquery())
            )
        )
        if not self._inserted:
            self.insert(session)

    def drop(self) -> None:
        """Drop the temporary tables, if made; a broken connection is simply discarded."""
        if not self._created:
            return
        self._created = False
        try:
            with self.conn.begin():
                stage_add_table.drop(self.conn, checkfirst=True)
                stage_remove_table.drop(self.conn, checkfirst=True)
        except DATABASE_ERRORS:
            self.conn.invalidate()  # never hand a connection with stray tables back


def _padded(rule: Rule) -> list[str | None]:
    values: list[str | None] = list(rule.values[: len(VALUE_COLUMNS)])
    return values + [None] * (len(VALUE_COLUMNS) - len(values))
