"""A large policy load beside an editor: how long the editor waits, how long the lock is held.

One engine (the CLI, a connection pool of its own) applies N rows as ``policy load``
does; another (an API worker) adds and removes one row every 50 ms meanwhile. Prints
the load's total time, the time it held the write lock, and the editor's longest wait.

    python -m bench.load                     # SQLite file in a temporary directory
    python -m bench.load postgresql+psycopg://postgres@127.0.0.1/test   # a fresh schema
    python -m bench.load --rows 100000
"""

from __future__ import annotations

import argparse
import logging
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from authz.connections import Timeouts
from authz.connections import engine_options
from authz.connections import install
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.model import PolicyModel
from authz.rules import Rule
from authz.store import PolicyStore

REPO = Path(__file__).resolve().parent.parent


def make_engine(url: str, schema: str | None) -> sa.Engine:
    timeouts = Timeouts()
    options = engine_options(url, timeouts)
    if schema is not None:
        args = options["connect_args"]
        args["options"] = f"-csearch_path={schema} {args['options']}"
    engine = sa.create_engine(url, **options)
    install(engine, timeouts)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _wal(dbapi_conn: object, _record: object) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")  # type: ignore[attr-defined]

    return engine


class HeldLock(logging.Handler):
    """Picks the lock time out of the engine's own log line."""

    held: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"lock held ([0-9.]+) s", record.getMessage())
        if found:
            self.held = float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="")
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    schema = None
    url = args.url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    if url.startswith("postgresql"):
        schema = f"bench_{secrets.token_hex(4)}"
        with sa.create_engine(url).begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    model = PolicyModel.from_file(REPO / "model.conf")
    loader = PolicyEngine(model, PolicyStore(make_engine(url, schema)))
    loader.store.create_schema()
    loader.load()
    editor = PolicyEngine(model, PolicyStore(make_engine(url, schema)))
    editor.load()
    handler = HeldLock()
    logging.getLogger("authz").addHandler(handler)
    logging.getLogger("authz").setLevel(logging.INFO)

    rows = [Rule.of("p", f"role{i % 500}", f"/r/{i}/*", "GET", "allow") for i in range(args.rows)]
    waits: list[float] = []
    reloading = [0.0]
    done = threading.Event()
    load = editor.load

    def timed_load() -> None:
        start = time.monotonic()
        load()
        reloading[0] += time.monotonic() - start

    # The editor's own reload of the new rows (after the load commits) holds no lock: it
    # is the cost of building a snapshot, counted apart from the wait for the lock.
    editor.load = timed_load  # type: ignore[method-assign]

    def edit() -> None:
        probe = Rule.of("p", "user", "/probe", "GET", "allow")
        while not done.is_set():
            for change in (Change.adding(probe), Change.removing(probe)):
                editor.refresh()  # an API worker's poll reloads in the background
                reloading[0] = 0.0
                start = time.monotonic()
                editor.apply(change, actor="bench", source="api")
                waits.append(time.monotonic() - start - reloading[0])
            time.sleep(0.05)

    thread = threading.Thread(target=edit)
    thread.start()
    start = time.monotonic()
    try:
        loader.apply(Change(add=tuple(rows)), actor="bench", source="cli")
    finally:
        total = time.monotonic() - start
        done.set()
        thread.join()
    print(f"{loader.store.engine.dialect.name}: {args.rows} rows loaded in {total:.1f} s")
    print(f"  write lock held {handler.held} s")
    print(
        f"  editor: {len(waits)} writes meanwhile, longest wait {max(waits):.2f} s "
        "(its own reload of the new rows not counted)"
    )
    if schema is not None:
        loader.store.engine.dispose()
        editor.store.engine.dispose()
        with sa.create_engine(url).begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
