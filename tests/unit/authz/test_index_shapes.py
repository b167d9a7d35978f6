"""Path patterns grouped by shape (authz.index.path_shape) against Casbin itself.

The index matches a literal keyMatch2 pattern by dict lookup, ``prefix/:name`` by the
request path's text up to its last "/", and ``prefix/*`` by ``str.startswith``, with no
regex or closure per pattern. Every pattern and path here is decided both by a snapshot
and by a ``casbin.Enforcer`` on the same rows: the decision and the explaining row must
be equal, for tricky patterns (regex metacharacters in literal parts, empty segments,
unicode, ``:`` at the end and in the middle, ``*`` in the middle) and tricky paths (a
final line break, which keyMatch2's ``$`` lets through, empty segments, unicode).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import casbin
import pytest
from casbin.util.builtin_operators import key_match2
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from authz.index import HEAD
from authz.index import LITERAL
from authz.index import PREFIX
from authz.index import SCAN
from authz.index import path_shape
from authz.model import PolicyModel
from authz.rules import Rule
from authz.snapshot import RowsAdapter
from authz.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[3]
SHIPPED_TEXT = (REPO / "model.conf").read_text(encoding="utf-8")
SHIPPED = PolicyModel.from_text(SHIPPED_TEXT, source="model.conf")

PATTERNS = (
    "/a/b",
    "/a.b/c",
    "/a/b/",
    "/a//b",
    "/",
    "",
    "/a/*",
    "/a.b/*",
    "/*",
    "//*",
    "*",
    "/a/b*",
    "/a/*/b",
    "/a/:id",
    "/a.b/:id",
    "/a/:id/b",
    "/a/:id/*",
    "/:x",
    "/a/:",
    "/a/:id:x",
    "/a/:n.json",
    "/a/x:y",
    "/a/:id.*",
    "/ü/:n",
    "/ü/*",
    "/ü/ä",
    "/a/(x)",
    "/a/b$",
    "/a/b\n",
    "/a/*\n",
    "/a/:id\n",
)
VALUES = (
    "/a/b",
    "/a/b\n",
    "/a/b\n\n",
    "/a/b/",
    "/a/b/c",
    "/a/b/c\n",
    "/a/b\nc",
    "/a/",
    "/a/\n",
    "/a/\n/",
    "/a",
    "/a//b",
    "/a//",
    "/axb/c",
    "/a.b/c",
    "/aXb/c",
    "/a.b/7",
    "/ü/ä",
    "/ü/",
    "/ü/ä/",
    "/a/1",
    "/a/1/",
    "/a/1\n",
    "/a/1/b",
    "/a/x:y",
    "/a/n.json",
    "/a/id:x",
    "/a/(x)",
    "/a/x",
    "",
    "\n",
    "/",
    "/\n",
    "//",
    "//x",
)


def enforcer(rules: Iterable[Rule]) -> casbin.Enforcer:
    """Casbin loading the rows through an adapter, as the engine's fallback does."""
    return casbin.Enforcer(casbin.Enforcer.new_model(text=SHIPPED_TEXT), RowsAdapter(list(rules)))


def answers(rules: list[Rule], requests: Iterable[tuple[str, str, str]]) -> None:
    """Assert the index decides every request as Casbin does, explaining row included."""
    snapshot = Snapshot.of(1, rules, SHIPPED)
    assert snapshot.kind == "index"
    reference = enforcer(rules)
    bad = []
    for request in requests:
        decision = snapshot.decide(*request)
        allowed, explain = reference.enforce_ex(*request)
        ours = (decision.allowed, list(decision.rule.values) if decision.rule else [])
        if ours != (allowed, list(explain)):
            bad.append(f"{request!r}: index {ours!r}, casbin {(allowed, explain)!r}")
    assert not bad, "\n".join(bad[:10])


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/a/b", (LITERAL, "/a/b")),
        ("/a/b/", (LITERAL, "/a/b/")),
        ("/ü/ä", (LITERAL, "/ü/ä")),
        ("/a/*", (PREFIX, "/a/")),
        ("/*", (PREFIX, "/")),
        ("/a/:id", (HEAD, "/a/")),
        ("/ü/:n.json", (HEAD, "/ü/")),
        ("/a.b/c", (SCAN, "")),  # "." is a regex dot in keyMatch2
        ("/a.b/*", (SCAN, "")),
        ("/a.b/:id", (SCAN, "")),
        ("/a/b*", (SCAN, "")),
        ("/a/*/b", (SCAN, "")),
        ("/a/:id/b", (SCAN, "")),
        ("/a/x:y", (SCAN, "")),
        ("/a/:", (SCAN, "")),
        ("*", (SCAN, "")),
        ("/a/b\n", (SCAN, "")),
        ("/a/:id\n", (SCAN, "")),
    ],
)
def test_path_shapes(pattern: str, expected: tuple[int, str]) -> None:
    assert path_shape("keyMatch2", pattern) == expected


@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_shape_matches_as_casbin_key_match2(pattern: str) -> None:
    rules = [Rule.of("p", "alice", pattern, "GET", "allow")]
    answers(rules, [("alice", value, "GET") for value in VALUES])
    # Casbin's own function, as a second opinion on the cases that matter most.
    snapshot = Snapshot.of(1, rules, SHIPPED)
    for value in VALUES:
        assert snapshot.decide("alice", value, "GET").allowed == key_match2(value, pattern)


def test_many_shapes_in_one_bucket_explain_as_casbin() -> None:
    # Every pattern twice, allow and deny, for one subject and through a role: several
    # rows match most paths, so the explaining row depends on policy order.
    rules = [Rule.of("g", "alice", "staff")]
    for n, pattern in enumerate(PATTERNS):
        subject = "alice" if n % 2 else "staff"
        rules.append(Rule.of("p", subject, pattern, "GET|POST", "allow"))
        if n % 3 == 0:
            rules.append(Rule.of("p", "staff", pattern, "POST", "deny"))
    requests = itertools.product(("alice", "staff", "bob"), VALUES, ("GET", "POST", "GETX"))
    answers(rules, requests)


def test_shapes_after_incremental_changes() -> None:
    rules = [Rule.of("p", "alice", p, "GET", "allow") for p in PATTERNS[::2]]
    snapshot = Snapshot.of(1, rules, SHIPPED)
    added = [Rule.of("p", "alice", p, "GET", "deny") for p in PATTERNS[1::4]]
    added += [Rule.of("p", "alice", p, "GET", "allow") for p in PATTERNS[1::2]]
    removed = rules[::3]
    changed = snapshot.with_changes(2, added, removed)
    remaining = [r for r in rules if r not in removed] + added
    reference = enforcer(remaining)
    for value in VALUES:
        decision = changed.decide("alice", value, "GET")
        allowed, explain = reference.enforce_ex("alice", value, "GET")
        assert (decision.allowed, list(decision.rule.values) if decision.rule else []) == (
            allowed,
            list(explain),
        ), value
    # The snapshot the change was built on still decides on its own rows.
    answers(rules, [("alice", value, "GET") for value in VALUES])


PIECES = st.sampled_from(("a", "b", "ü", ".", "x.y", "", ":id", ":n.json", "*", "-", "x:y"))
PATH_PIECES = st.sampled_from(("a", "b", "ü", ".", "x.y", "", "1", "n.json", "x:y", "a\n", "\n"))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    patterns=st.lists(st.lists(PIECES, min_size=1, max_size=4), min_size=1, max_size=6),
    paths=st.lists(
        st.tuples(st.lists(PATH_PIECES, min_size=0, max_size=5), st.booleans()),
        min_size=1,
        max_size=12,
    ),
)
def test_generated_patterns_and_paths(
    patterns: list[list[str]], paths: list[tuple[list[str], bool]]
) -> None:
    rules = [
        Rule.of("p", "alice", "/" + "/".join(parts), "GET", "deny" if n % 4 == 3 else "allow")
        for n, parts in enumerate(patterns)
    ]
    values = ["/" + "/".join(parts) + ("\n" if newline else "") for parts, newline in paths]
    values += [r.values[1] for r in rules] + [r.values[1] + "\n" for r in rules]
    answers(list(dict.fromkeys(rules)), [("alice", v, "GET") for v in values])
