"""Decision benchmark: our engine against casbin.Enforcer on the same rows, one process.

For each shape it writes the rows into a fresh SQLite database, then measures for both
engines: load time from the database, process memory growth (RSS), and p50/p99 latency
of allowed and denied decisions, and prints the ratios.

    python bench/decisions.py [small medium large large-explicit huge] [--casbin-requests N]

Casbin is timed on at most 20 requests for the huge shape (about a second each).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import casbin
import sqlalchemy as sa
from sqlalchemy_adapter import Adapter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from authz import PolicyEngine  # noqa: E402
from authz import PolicyModel  # noqa: E402
from authz import PolicyStore  # noqa: E402
from authz import Rule  # noqa: E402
from authz.index import Unsupported  # noqa: E402, F401
from bench.shapes import SHAPES  # noqa: E402
from bench.shapes import Huge  # noqa: E402
from bench.shapes import Shape  # noqa: E402

MODEL = ROOT / "model.conf"
#: Casbin decisions timed for a shape of more than 500,000 rows.
HUGE_CASBIN_REQUESTS = 20


def rss_mb() -> float:
    """Resident set size of this process, in MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2] / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return p50, p99


def time_calls(fn, requests: list[tuple[str, str, str]], expect: bool) -> list[int]:  # noqa: ANN001
    """Time each call; check every answer is the expected one."""
    samples = []
    clock = time.perf_counter_ns
    for request in requests:
        start = clock()
        answer = fn(*request)
        samples.append(clock() - start)
        assert bool(answer) is expect, (request, answer)
    return samples


def prepare(shape: Shape | Huge, folder: Path) -> sa.Engine:
    """A SQLite database holding the shape's rows."""
    engine = sa.create_engine(f"sqlite:///{folder / (shape.name + '.db')}")
    store = PolicyStore(engine)
    store.create_schema()
    with store.transaction() as session:
        store.insert_rules(session, shape.rows())
    return engine


def run(shape: Shape | Huge, folder: Path, requests: int, casbin_requests: int) -> dict[str, float]:
    db = prepare(shape, folder)
    rng = random.Random(7)
    users = [rng.randrange(shape.users) for _ in range(requests)]
    allowed = [shape.allowed_request(u) for u in users]
    denied = [shape.denied_request(u) for u in users]

    # --- our engine ---
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    ours = PolicyEngine(PolicyModel.from_file(MODEL), PolicyStore(db))
    ours.load()
    ours_load = time.perf_counter() - start
    gc.collect()
    ours_mem = rss_mb() - before
    assert ours.snapshot.kind == "index"

    def decide(sub: str, obj: str, act: str) -> bool:
        return ours.decide(sub, obj, act).allowed

    time_calls(decide, allowed[:1000], True)  # warm up
    ours_allow = percentiles(time_calls(decide, allowed, True))
    ours_deny = percentiles(time_calls(decide, denied, False))

    # The timing harness alone (two clock reads and a call), to read the numbers above.
    harness = percentiles(time_calls(lambda *_r: True, allowed, True))

    # Memory for subjects the policy has never seen: 100,000 decisions, then compare.
    strangers = [(f"visitor{i}@elsewhere.example", "/data/1/doc", "GET") for i in range(100_000)]
    for request in strangers[:1000]:
        ours.decide(*request)
    gc.collect()
    tracemalloc.start()
    before_strangers = rss_mb()
    first = tracemalloc.take_snapshot()
    for request in strangers:
        ours.decide(*request)
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(first, "filename"))
    strangers_rss = rss_mb() - before_strangers
    tracemalloc.stop()

    # A one-row change on the full snapshot.
    change_ms = []
    for i in range(20):
        rule = Rule("p", (f"group{i}", f"/extra/{i}", "GET", "allow"))
        snap = ours.snapshot
        start = time.perf_counter()
        snap.with_changes(snap.revision + 1, [rule], [])
        change_ms.append((time.perf_counter() - start) * 1000)

    # --- casbin.Enforcer on the same rows, loaded through the SQLAlchemy adapter ---
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    enforcer = casbin.Enforcer(str(MODEL), Adapter(db, create_table=False))
    casbin_load = time.perf_counter() - start
    gc.collect()
    casbin_mem = rss_mb() - before
    # Casbin takes about a second per decision at a million rows: fewer requests there.
    n = min(casbin_requests, requests)
    if len(ours.snapshot.ruleset) > 500_000:
        n = min(n, HUGE_CASBIN_REQUESTS)
    casbin_allow = percentiles(time_calls(enforcer.enforce, allowed[:n], True))
    casbin_deny = percentiles(time_calls(enforcer.enforce, denied[:n], False))
    db.dispose()
    return {
        "rows": sum(1 for _ in shape.rows()),
        "ours_load_s": ours_load,
        "ours_mem_mb": ours_mem,
        "ours_allow_p50": ours_allow[0],
        "ours_allow_p99": ours_allow[1],
        "ours_deny_p50": ours_deny[0],
        "ours_deny_p99": ours_deny[1],
        "change_ms_median": statistics.median(change_ms),
        "change_ms_max": max(change_ms),
        "casbin_load_s": casbin_load,
        "casbin_mem_mb": casbin_mem,
        "casbin_allow_p50": casbin_allow[0],
        "casbin_allow_p99": casbin_allow[1],
        "casbin_deny_p50": casbin_deny[0],
        "casbin_deny_p99": casbin_deny[1],
        "casbin_requests": n,
        "harness_p50": harness[0],
        "strangers_traced_kb": grown / 1024,
        "strangers_rss_mb": strangers_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--casbin-requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes:
            r = run(SHAPES[name], Path(tmp), args.requests, args.casbin_requests)
            print(f"\n== {name}: {r['rows']:,} rows ==")
            print(f"{'':24}{'ours':>14}{'casbin':>14}{'ratio':>12}")
            rows = [
                ("load from database (s)", r["ours_load_s"], r["casbin_load_s"]),
                ("memory growth (MB)", r["ours_mem_mb"], r["casbin_mem_mb"]),
                ("allowed p50 (us)", r["ours_allow_p50"], r["casbin_allow_p50"]),
                ("allowed p99 (us)", r["ours_allow_p99"], r["casbin_allow_p99"]),
                ("denied p50 (us)", r["ours_deny_p50"], r["casbin_deny_p50"]),
                ("denied p99 (us)", r["ours_deny_p99"], r["casbin_deny_p99"]),
            ]
            for label, ours, theirs in rows:
                ratio = theirs / ours if ours > 0 else float("inf")
                print(f"{label:24}{ours:>14.3f}{theirs:>14.3f}{ratio:>11.0f}x")
            print(f"timing harness alone: p50 {r['harness_p50']:.3f} us (included above)")
            print(
                f"100,000 decisions for never-seen subjects: memory "
                f"{r['strangers_traced_kb']:+.1f} KB traced, {r['strangers_rss_mb']:+.2f} MB RSS"
            )
            print(
                f"one-row change: median {r['change_ms_median']:.2f} ms, "
                f"max {r['change_ms_max']:.2f} ms; casbin timed on {r['casbin_requests']} "
                "requests"
            )


if __name__ == "__main__":
    main()
