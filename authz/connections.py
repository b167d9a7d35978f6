"""Bounded waits on the database: connect and statement timeouts on every connection.

A database that refuses connections fails fast on its own. One that accepts them and
then never answers (a hung server, a stuck proxy, a half-open connection) would block
the caller forever: no request, start-up or poll may wait on it longer than a few
seconds. Three layers, because each misses something the others catch:

- the server's ``statement_timeout`` ends a statement that runs too long;
- TCP keepalives and ``tcp_user_timeout`` detect a peer that vanished from the network;
- a client-side deadline on every wait for the server (PostgreSQL through psycopg)
  ends a wait on a peer that is connected but silent, which the kernel cannot see
  (its ACKs keep coming). The connection is then closed, so the pool discards it.

SQLite has no network: its only wait is for another writer's lock (the busy timeout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

#: Seconds a client waits beyond the server's statement timeout before giving up on it.
GRACE = 1.0


@dataclass(frozen=True)
class Timeouts:
    """How long to wait for a connection and for one statement, in seconds (0 = forever)."""

    connect: float = 5.0
    statement: float = 5.0

    @property
    def wait(self) -> float | None:
        """The longest a client waits for one answer from the server, or None."""
        return self.statement + GRACE if self.statement > 0 else None


def engine_options(url: str, timeouts: Timeouts) -> dict[str, Any]:
    """Return ``create_engine`` keyword arguments that bound every wait on ``url``."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        # sqlite3's "timeout" is its busy timeout: how long to wait for a writer's lock.
        busy = timeouts.statement if timeouts.statement > 0 else 3600.0
        return {"connect_args": {"timeout": busy}}
    options: dict[str, Any] = {}
    if timeouts.connect > 0:
        # Waiting for a pooled connection is waiting for the database too.
        options["pool_timeout"] = timeouts.connect
    if backend != "postgresql":
        return options
    args: dict[str, Any] = {
        # TCP keepalives notice a peer gone from the network while idle (e.g. LISTEN);
        # tcp_user_timeout, one whose sent data is never acknowledged.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 1,
        "keepalives_count": 3,
    }
    if timeouts.connect > 0:
        # libpq counts whole seconds (at least 2); the handshake is included.
        args["connect_timeout"] = max(2, math.ceil(timeouts.connect))
        args["tcp_user_timeout"] = int(max(timeouts.connect, timeouts.statement) * 1000)
    if timeouts.statement > 0:
        setting = f"-c statement_timeout={int(timeouts.statement * 1000)}"
        # An "options" in the URL (e.g. a search_path) is kept, not replaced.
        given = parsed.query.get("options")
        if isinstance(given, tuple):
            given = " ".join(given)
        args["options"] = f"{given} {setting}" if given else setting
    options["connect_args"] = args
    return options


def install(engine: sa.Engine, timeouts: Timeouts) -> None:
    """Give every new PostgreSQL connection of ``engine`` a client-side deadline."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return
    limit = timeouts.wait
    if limit is None:
        return

    @sa.event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        connection = _deadline_class().connect(*cargs, **cparams)
        connection.deadline = limit
        return connection


_DEADLINE_CLASS: type[Any] | None = None


def _deadline_class() -> type[Any]:
    """The psycopg connection class whose every wait for the server has a deadline."""
    global _DEADLINE_CLASS  # noqa: PLW0603 - built once, on first use (psycopg is optional)
    if _DEADLINE_CLASS is not None:
        return _DEADLINE_CLASS
    import psycopg

    wait_timeout: type[BaseException] = getattr(psycopg.errors, "_WaitTimeout", TimeoutError)

    class DeadlineConnection(psycopg.Connection[Any]):
        """A psycopg connection that never waits for the server longer than ``deadline``."""

        deadline: float | None = None

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            # Every query, fetch, commit and rollback waits here; an explicit timeout
            # (``notifies(timeout=...)``) is the caller's own and is kept.
            limit = timeout if timeout is not None else self.deadline
            try:
                return super().wait(gen, interval, limit)
            except wait_timeout:
                if timeout is not None:
                    raise
                # The connection is mid-protocol: it cannot be reused. Closing it makes
                # SQLAlchemy see a disconnect and drop it from the pool.
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database did not answer within {limit:g} s"
                ) from None

    _DEADLINE_CLASS = DeadlineConnection
    return DeadlineConnection
