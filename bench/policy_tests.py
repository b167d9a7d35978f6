"""What policy tests cost a write, and what a what-if costs, on a 110,000-row policy.

The policy is the default policy plus the ``large`` shape (10,000 roles, 100,000 users:
110,000 rows), in a temporary SQLite file (or ``--database URL``). One-row writes (a rule
added, then removed) are timed through the engine's write path, in alternating blocks:
with no stored policy test, and with ``--tests`` of them (1,000 by default: allowed and
denied requests of the shape's users, and the shipped tests). Both kinds of block run in
the same process, so the difference is the tests' cost. The what-if of a one-row change
(rows planned, snapshots compared, tests flipped) is timed too.

    python bench/policy_tests.py [--tests 1000] [--writes 40] [--rounds 5] [--database URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import sqlalchemy as sa  # noqa: E402

from authz import Change  # noqa: E402
from authz import PolicyEngine  # noqa: E402
from authz import PolicyModel  # noqa: E402
from authz import PolicyStore  # noqa: E402
from authz import Rule  # noqa: E402
from authz import csvio  # noqa: E402
from authz import expectations  # noqa: E402
from authz.expectations import Expectation  # noqa: E402
from authz.whatif import compare  # noqa: E402
from bench.shapes import SHAPES  # noqa: E402
from bench.shapes import Shape  # noqa: E402


def build(url: str) -> PolicyEngine:
    model = PolicyModel.from_file(ROOT / "model.conf")
    db = sa.create_engine(url)
    store = PolicyStore(db)
    store.create_schema()
    engine = PolicyEngine(model, store)
    engine.load()
    shape = SHAPES["large"]
    default = csvio.read_file(ROOT / "policies" / "default.csv", model).rules
    engine.apply(Change.adding(*default, *shape.rows()), actor="bench", source="cli")
    return engine


def promises(count: int, *, reached: bool) -> list[Expectation]:
    """``count`` policy tests the policy keeps: the shipped ones, then more.

    ``reached``: every test names a subject that inherits ``anonymous`` (the worst case for
    a write on ``anonymous``'s rows: each test is judged); otherwise the shape's users,
    allowed and denied requests (a write on one group's rows reaches few of them).
    """
    shape = SHAPES["large"]
    assert isinstance(shape, Shape)
    found = list(expectations.read_file(ROOT / "policies" / "default-tests.csv").expectations)
    u = 0
    while len(found) < count:
        if reached:
            subject = ("anonymous", "user", "admin")[u % 3]
            found.append(expectations.expectation(subject, "GET", f"/data/{u}/doc", "deny"))
        else:
            sub, obj, act = shape.allowed_request(u) if u % 2 else shape.denied_request(u)
            found.append(expectations.expectation(sub, act, obj, "allow" if u % 2 else "deny"))
        u += 1 if reached else 997  # spread over the shape's users
        u %= shape.users
    return found[:count]


def timed_writes(engine: PolicyEngine, count: int, subject: str) -> list[float]:
    times = []
    for i in range(count):
        name = subject if subject != "group" else f"group{i % 10_000}"
        rule = Rule.of("p", name, f"/bench/{i}", "GET", "allow")
        for change in (Change.adding(rule), Change.removing(rule)):
            start = time.perf_counter()
            engine.apply(change, actor="bench", source="cli")
            times.append(time.perf_counter() - start)
    return times


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[int(len(values) * 0.95)]
    return f"median {statistics.median(values) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=40, help="rules added and removed a block")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", default="", help="SQLAlchemy URL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database or f"sqlite:///{Path(scratch) / 'bench.db'}"
        start = time.perf_counter()
        engine = build(url)
        took = time.perf_counter() - start
        print(f"policy: {len(engine.rules())} rows in {took:.1f} s ({url.split(':')[0]})")
        for title, subject, reached in (
            ("a write reaching every test (on anonymous's rows)", "anonymous", True),
            ("a write on one group's rows, tests of users", "group", False),
        ):
            tests = promises(args.tests, reached=reached)
            failing = expectations.failures(engine.snapshot, tests)
            assert not failing, [str(r) for r in failing[:3]]
            plain: list[float] = []
            gated: list[float] = []
            timed_writes(engine, 5, subject)  # warm up
            for _ in range(args.rounds):
                engine.change_expectations(
                    remove=engine.expectations(), actor="b", source="cli", action="test.remove"
                )
                plain += timed_writes(engine, args.writes, subject)
                engine.change_expectations(tests, actor="b", source="cli", action="test.add")
                gated += timed_writes(engine, args.writes, subject)
            added = statistics.median(gated) - statistics.median(plain)
            print(f"{title}:")
            print(f"  no policy tests:        {ms(plain)}")
            print(f"  {len(tests):>5} policy tests:     {ms(gated)}")
            print(
                f"  added by the tests (median): {added * 1000:.2f} ms "
                f"({statistics.median(gated) / statistics.median(plain):.2f}x)"
            )
        # The check alone, every test judged: read in a transaction, decided on both sides.
        snapshot = engine.snapshot
        after = snapshot.with_changes(
            snapshot.revision + 1, [Rule.of("p", "group1", "/x", "GET", "allow")], []
        )
        checks = []
        for _ in range(50):
            begin = time.perf_counter()
            with engine.store.transaction() as session:
                expectations.broken(snapshot, after, engine.expectations(session))
            checks.append(time.perf_counter() - begin)
        print(f"reading and judging {len(tests)} tests alone: {ms(checks)}")
        change = Change.adding(Rule.of("p", "group42", "/reports/:id", "POST", "allow"))
        what = []
        for _ in range(10):
            begin = time.perf_counter()
            planned = engine.what_if(change)
            result = compare(
                planned.before,
                planned.after,
                added=planned.added,
                removed=planned.removed,
                expectations=planned.expectations,
            )
            what.append(time.perf_counter() - begin)
        print(
            f"what-if of a one-row change: {ms(what)} "
            f"({result.compared['paths']} paths x {result.compared['roles']} roles + "
            f"{result.compared['users']} users, {len(result.lines)} lines)"
        )
        engine.store.engine.dispose()


if __name__ == "__main__":
    main()
