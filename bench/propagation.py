"""Propagation between two instances on PostgreSQL: how soon a one-row change is seen.

Fills a policy of the chosen shape with COPY, then starts two instances, each its own
process with a PolicyEngine, a PostgresListener and a RevisionPoller as a worker of the
service runs them. Instance A makes one-row changes, each flipping the decision on a
known request; instance B decides requests all along, and a watcher on B asks the
flipped request every 0.2 ms. B's requests arrive on a fixed schedule, 10 every
millisecond (open loop, as requests arrive at a worker whether or not it is busy). Prints,
for B:

- how long after A's commit the flip was visible (p50, p99, max over the changes);
- each decision's own time (``decide``), while idle and during the changes;
- request latency: from each millisecond's scheduled arrival to the answer of its 10
  requests, which includes waiting for the interpreter while a reload holds it (the
  spike a full read of a large policy causes), while idle and during the changes;
- how B caught up (change log or full reads).

Then the same with B forced to read every row on each change (the behaviour before the
change log), over fewer changes: the baseline, measured in the same run.

    python bench/propagation.py                                  # huge: 1,001,000 rows
    python bench/propagation.py --shape large --changes 20       # 110,000 rows, quick
    python bench/propagation.py --database postgresql+psycopg://postgres@127.0.0.1/NAME

The database is created when missing; its policy tables are dropped and filled again.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import IO
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from authz.connections import Timeouts  # noqa: E402
from authz.connections import engine_options  # noqa: E402
from authz.connections import install  # noqa: E402
from authz.engine import Change  # noqa: E402
from authz.engine import PolicyEngine  # noqa: E402
from authz.model import PolicyModel  # noqa: E402
from authz.rules import Rule  # noqa: E402
from authz.store import PolicyStore  # noqa: E402
from bench.shapes import SHAPES  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1/propagation"
#: Production's connect timeout; a statement may take longer than production's 5 s here,
#: so that the baseline's full reads of a large policy complete.
TIMEOUTS = Timeouts(connect=5.0, statement=120.0)
BURST = 10
TICK = 0.001
WATCH_EVERY = 0.0002


def make_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url, **engine_options(url, TIMEOUTS))
    install(engine, TIMEOUTS)
    return engine


def pct(values: list[int] | array[int], q: float) -> float:
    """The q-quantile of nanosecond values, in microseconds."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000


# -- the database ------------------------------------------------------------------------


def prepare(url: str, shape_name: str) -> int:
    """Create the database if missing, drop and fill the policy tables; return the rows."""
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        ).first()
        if exists is None:
            conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in ("casbin_rule", "policy_revision", "audit_log", "policy_change"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    store = PolicyStore(engine)
    store.create_schema()
    started = time.perf_counter()
    count = 0
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        copy_sql = "COPY casbin_rule (ptype, v0, v1, v2, v3) FROM STDIN"
        with cursor.copy(copy_sql) as copy:
            for rule in SHAPES[shape_name].rows():
                values = list(rule.values) + [None] * (4 - len(rule.values))
                copy.write_row((rule.ptype, *values))
                count += 1
        cursor.execute("UPDATE policy_revision SET revision = 1")
        cursor.execute("ANALYZE casbin_rule")
        raw.commit()
    finally:
        raw.close()
    engine.dispose()
    print(f"filled {count:,} rows ({shape_name}) in {time.perf_counter() - started:.1f} s")
    return count


# -- an instance (a child process) -------------------------------------------------------


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def instance(url: str, role: str, shape_name: str, full: bool) -> None:
    """Run one instance; obey commands on stdin, answer on stdout (one JSON per line)."""
    from authz import engine as engine_module
    from authz.sync import PostgresListener
    from authz.sync import RevisionPoller

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if full:
        # The behaviour before the change log: every revision moved means a full read.
        engine_module.CATCH_UP_REVISIONS = 0
    started = time.perf_counter()
    # As the service runs it; the baseline is main's code, which read in full and froze
    # nothing (a full collection over a large policy's objects pauses for seconds).
    engine = PolicyEngine(
        PolicyModel.from_file(REPO / "model.conf"),
        PolicyStore(make_engine(url)),
        freeze_gc=not full,
    )
    engine.load()
    loaded = time.perf_counter() - started
    listener = PostgresListener(engine)
    poller = RevisionPoller(engine, 0.5)
    listener.start()
    poller.start()
    listener.listening.wait(30)
    shape = SHAPES[shape_name]
    rng = random.Random(7)
    users = [rng.randrange(shape.users) for _ in range(5000)]
    requests = [shape.allowed_request(u) for u in users] + [shape.denied_request(u) for u in users]
    rng.shuffle(requests)
    phases: dict[str, tuple[array[int], array[int]]] = {}
    current: list[tuple[array[int], array[int]] | None] = [None]
    stop = threading.Event()

    def decide_loop() -> None:
        clock = time.perf_counter_ns
        decide = engine.decide
        n = len(requests)
        i = 0
        tick = int(TICK * 1e9)
        due = clock()
        while not stop.is_set():
            due += tick
            now = clock()
            if now < due:
                time.sleep((due - now) / 1e9)
            elif now - due > 100 * tick:
                due = now  # far behind (a pause longer than 0.1 s): count it once
            record = current[0]
            t1 = 0
            for _ in range(BURST):
                sub, obj, act = requests[i % n]
                i += 1
                t0 = clock()
                decide(sub, obj, act)
                t1 = clock()
                if record is not None:
                    record[0].append(t1 - t0)
            if record is not None:
                record[1].append(t1 - due)

    if role == "reader":
        threading.Thread(target=decide_loop, daemon=True, name="decisions").start()
    say({"ready": True, "load_seconds": loaded, "revision": engine.revision})
    for line in sys.stdin:
        command = json.loads(line)
        kind = command["do"]
        if kind == "phase":
            phases[command["name"]] = (array("q"), array("q"))
            current[0] = phases[command["name"]]
            say({"ok": True})
        elif kind == "watch":
            sub, obj, act = command["request"]
            want = command["allowed"]
            say({"watching": True})
            deadline = time.monotonic() + command["timeout"]
            seen = None
            while time.monotonic() < deadline:
                if engine.decide(sub, obj, act).allowed == want:
                    seen = time.time()
                    break
                time.sleep(WATCH_EVERY)
            say({"seen": seen, "revision": engine.revision})
        elif kind == "write":
            rule = Rule(command["rule"][0], tuple(command["rule"][1:]))
            change = Change.adding(rule) if command["add"] else Change.removing(rule)
            t0 = time.perf_counter()
            applied = engine.apply(change, actor="bench", source="api")
            committed = time.time()
            say(
                {
                    "committed": committed,
                    "revision": applied.revision,
                    "took": time.perf_counter() - t0,
                }
            )
        elif kind == "report":
            current[0] = None
            say(
                {
                    "phases": {
                        f"{name} {kind}": {
                            "n": len(values),
                            "p50": pct(values, 0.50),
                            "p99": pct(values, 0.99),
                            "p999": pct(values, 0.999),
                            "max": max(values, default=0) / 1000,
                        }
                        for name, both in phases.items()
                        for kind, values in zip(("decide", "request"), both, strict=True)
                    },
                    "refreshes": engine.refreshes,
                }
            )
        elif kind == "quit":
            break
    stop.set()
    listener.stop()
    poller.stop()


# -- the driver --------------------------------------------------------------------------


class Child:
    """One instance process, spoken to in JSON lines."""

    def __init__(self, url: str, role: str, shape: str, full: bool = False) -> None:
        args = [sys.executable, __file__, "--instance", role, "--database", url, "--shape", shape]
        if full:
            args.append("--full")
        self.proc = subprocess.Popen(  # noqa: S603 - this very script, our own arguments
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.role = role

    def send(self, **command: Any) -> None:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()

    def read(self) -> dict[str, Any]:
        stdout = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"instance {self.role} ended (exit code {self.proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(do="quit")
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def run(
    url: str, shape: str, changes: int, idle: float, gap: float, full: bool, offset: int
) -> dict[str, Any]:
    """One round: A writes ``changes`` one-row changes, B watches and decides."""
    writer = Child(url, "writer", shape)
    reader = Child(url, "reader", shape, full=full)
    try:
        a, b = writer.read(), reader.read()
        print(
            f"  loaded: A {a['load_seconds']:.1f} s, B {b['load_seconds']:.1f} s "
            f"(revision {b['revision']})",
            flush=True,
        )
        reader.ask(do="phase", name="idle")
        time.sleep(idle)
        reader.ask(do="phase", name="changes")
        flips: list[float] = []
        writes: list[float] = []
        timeout = 300.0 if full else 30.0
        for i in range(changes):
            n = offset + i - (i % 2)  # even: add rule n; odd: remove it again
            sub = f"user{(n * 7919) % 1000}@example.com"
            rule = ["p", sub, f"/bench/{n}", "GET", "allow"]
            add = i % 2 == 0
            reader.send(
                do="watch", request=[sub, f"/bench/{n}", "GET"], allowed=add, timeout=timeout
            )
            assert reader.read()["watching"]
            done = writer.ask(do="write", rule=rule, add=add)
            seen = reader.read()
            writes.append(done["took"])
            if seen["seen"] is None:
                print(f"  change {i}: not seen within {timeout:.0f} s", flush=True)
                flips.append(float("inf"))
            else:
                flips.append(seen["seen"] - done["committed"])
            time.sleep(gap)
        report = reader.ask(do="report")
    finally:
        writer.close()
        reader.close()
    return {"flips": flips, "writes": writes, **report}


def show(title: str, result: dict[str, Any]) -> None:
    flips = sorted(result["flips"])
    ms = [f * 1000 for f in flips]
    print(f"{title}")
    print(
        f"  visible on B after A's commit: p50 {statistics.median(ms):.1f} ms, "
        f"p99 {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.1f} ms, max {ms[-1]:.1f} ms "
        f"over {len(ms)} changes; A's write p50 {statistics.median(result['writes']) * 1000:.1f} ms"
    )
    for kind in ("decide", "request"):
        idle, busy = result["phases"][f"idle {kind}"], result["phases"][f"changes {kind}"]
        for name, p in (("idle", idle), ("during changes", busy)):
            print(
                f"  B {kind} {name}: n {p['n']:,}, p50 {p['p50']:.1f} us, "
                f"p99 {p['p99']:.1f} us, p99.9 {p['p999']:.1f} us, max {p['max']:.0f} us"
            )
        print(
            f"  B {kind} p99 during changes / idle: {busy['p99'] / idle['p99']:.2f}x "
            f"(p99.9 {busy['p999'] / idle['p999']:.2f}x)"
        )
    print(f"  B caught up: {result['refreshes']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=DEFAULT_URL)
    parser.add_argument("--shape", default="huge", choices=sorted(SHAPES))
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--baseline-changes", type=int, default=4, help="0: no baseline")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds measured idle")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between changes")
    parser.add_argument("--instance", choices=["writer", "reader"], help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instance:
        instance(args.database, args.instance, args.shape, args.full)
        return
    prepare(args.database, args.shape)
    print(f"change log: {args.changes} one-row changes", flush=True)
    show(
        "change log (increments)",
        run(args.database, args.shape, args.changes, args.idle, args.gap, full=False, offset=0),
    )
    if args.baseline_changes:
        print(f"baseline: full reads, {args.baseline_changes} one-row changes", flush=True)
        show(
            "baseline (every change read in full)",
            run(
                args.database,
                args.shape,
                args.baseline_changes,
                args.idle,
                args.gap,
                full=True,
                offset=10_000,
            ),
        )


if __name__ == "__main__":
    main()
