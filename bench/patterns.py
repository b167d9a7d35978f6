"""Pattern cost benchmark: the worst case of every accepted pattern, against a literal match.

Generates hostile regexMatch patterns from nested, overlapping and adjacent repeats,
keeps those the write path accepts (authz.patterns.check), and times each one on inputs
built to make a backtracking matcher work hardest, at the longest value the engine
decides on (MAX_VALUE characters). It prints the slowest accepted patterns, the same
numbers for the patterns people write, and the ratio to a baseline (a literal pattern
on the same inputs) measured in the same process.

    python bench/patterns.py [--patterns 5000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from authz.patterns import MAX_VALUE  # noqa: E402
from authz.patterns import PatternError  # noqa: E402
from authz.patterns import check  # noqa: E402
from authz.patterns import compile_regex  # noqa: E402

ATOMS = ["a", "b", "/", ".", "[^/]", "[ab]", "[^a]", "x", "(ab)", "(a|b)", "(a|ab)", "a?"]
QUANTS = ["", "", "*", "+", "?", "{0,9}", "{1,}", "*?", "{0,64}"]
EVERYDAY = [
    ("keyMatch2", "/admin/*"),
    ("keyMatch2", "/users/:id/roles/:role"),
    ("keyMatch2", "/files/*/:name"),
    ("regexMatch", "GET|POST"),
    ("regexMatch", ".*"),
    ("regexMatch", "^(GET|HEAD|POST|PUT|PATCH|DELETE)$"),
]


def attacks() -> list[str]:
    """Inputs of MAX_VALUE characters that keep a backtracking matcher busy."""
    n = MAX_VALUE
    return [
        "/" + "a" * (n - 2) + "!",
        ("/a" * (n // 2))[: n - 1] + "!",
        ("ab" * (n // 2))[: n - 1] + "!",
        ("ba" * (n // 2))[: n - 1] + "!",
        "/" * (n - 1) + "!",
        ("a/" * (n // 2))[: n - 2] + "x!",
    ]


def worst(kind: str, pattern: str, inputs: list[str]) -> float:
    """The slowest of the inputs, best of three runs each, in microseconds."""
    predicate = compile_regex(kind, pattern)
    slowest = 0.0
    for value in inputs:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            predicate(value)
            best = min(best, time.perf_counter() - start)
        slowest = max(slowest, best)
    return slowest * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    inputs = attacks()
    baseline = worst("regexMatch", "/admin/users", inputs)
    accepted: list[tuple[float, str]] = []
    refused = 0
    for _ in range(args.patterns):
        parts = "".join(rng.choice(ATOMS) + rng.choice(QUANTS) for _ in range(rng.randint(1, 6)))
        pattern = ("^" if rng.random() < 0.3 else "") + parts + ("$" if rng.random() < 0.3 else "")
        try:
            check("regexMatch", pattern)
        except PatternError:
            refused += 1
            continue
        accepted.append((worst("regexMatch", pattern, inputs), pattern))
    accepted.sort(reverse=True)
    print(f"inputs of {MAX_VALUE} characters; baseline literal pattern: {baseline:.1f} µs")
    print(f"generated {args.patterns}: {len(accepted)} accepted, {refused} refused")
    print("slowest accepted patterns:")
    for micros, pattern in accepted[:5]:
        print(f"  {micros:8.1f} µs  {micros / baseline:8.0f}x  {pattern!r}")
    print("patterns people write:")
    for kind, pattern in EVERYDAY:
        micros = worst(kind, pattern, inputs)
        print(f"  {micros:8.1f} µs  {micros / baseline:8.0f}x  {kind} {pattern!r}")


if __name__ == "__main__":
    main()
