"""Pattern cost bounds: catastrophic patterns are refused, accepted ones decide as Casbin."""

from __future__ import annotations

import random
import re
import threading
from pathlib import Path

import pytest
from casbin.util.builtin_operators import glob_match
from casbin.util.builtin_operators import key_match2
from casbin.util.builtin_operators import key_match3
from casbin.util.builtin_operators import key_match4
from casbin.util.builtin_operators import key_match5
from casbin.util.builtin_operators import regex_match
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from wcmatch import _wcparse as wcparse

from authz import RuleError
from authz.index import compile_predicate
from authz.model import PolicyModel
from authz.patterns import MAX_VALUE
from authz.patterns import PatternError
from authz.patterns import check
from authz.patterns import compile_regex
from authz.rules import Rule
from authz.rules import validate

MODEL = Path(__file__).resolve().parents[3] / "model.conf"

CASBIN = {
    "keyMatch2": key_match2,
    "keyMatch3": key_match3,
    "keyMatch4": key_match4,
    "keyMatch5": key_match5,
    "regexMatch": regex_match,
}

#: Patterns known to backtrack catastrophically in Python's re, each with its attack input.
CATASTROPHIC = [
    ("regexMatch", "(A+)+$", "A" * 28 + "!"),
    ("regexMatch", "(a|aa)+$", "a" * 40 + "!"),
    ("regexMatch", "(a|a)*b", "a" * 40),
    ("regexMatch", "(a?a?)*b", "a" * 40),
    ("regexMatch", "(.*a){12}", "a" * 40),
    ("regexMatch", "^(\\w+\\s?)*$", "word " * 20 + "!"),
    ("regexMatch", ".*.*.*.*=.*", "=" * 2000),
    ("regexMatch", "(x+x+)+y", "x" * 40),
    ("keyMatch2", "/*/*/*/*/*/*/*/*/*/*/x", "/a" * 40),
    ("keyMatch2", "/*/*", "/a" * 1000),
    ("keyMatch3", "/*/*/*/{id}", "/a" * 1000),
    ("keyMatch5", "/*/*/*/x", "/a" * 1000),
    ("regexMatch", "(a)\\1", "aa"),
    ("regexMatch", "(?=a)a", "a"),
]

#: Patterns people write: accepted.
EVERYDAY = [
    ("keyMatch2", "/admin/*"),
    ("keyMatch2", "/users/:id"),
    ("keyMatch2", "/users/:id/roles/:role"),
    ("keyMatch2", "/files/*/:name"),
    ("keyMatch2", "*"),
    ("keyMatch2", "/"),
    ("regexMatch", "GET"),
    ("regexMatch", "GET|POST"),
    ("regexMatch", "^(GET|HEAD|POST|PUT|PATCH|DELETE)$"),
    ("regexMatch", ".*"),
    ("regexMatch", "/reports/[0-9]+/pdf"),
    ("regexMatch", "\\d+"),
    ("keyMatch3", "/users/{id}/*"),
    ("keyMatch4", "/parent/{id}/child/{id}"),
    ("keyMatch5", "/docs/*"),
]


@pytest.mark.parametrize(("kind", "pattern", "attack"), CATASTROPHIC)
def test_catastrophic_patterns_are_refused(kind: str, pattern: str, attack: str) -> None:
    """Each known catastrophic pattern is refused, with a reason that says why."""
    with pytest.raises(PatternError) as refused:
        check(kind, pattern)
    assert repr(pattern) in str(refused.value)


@pytest.mark.parametrize(("kind", "pattern"), EVERYDAY)
def test_everyday_patterns_are_accepted(kind: str, pattern: str) -> None:
    """What people write in policies passes the check."""
    check(kind, pattern)


def test_the_issue_rows_are_refused_at_write_time() -> None:
    """The rows that froze every worker cannot be written."""
    model = PolicyModel.from_file(MODEL)
    for rule in (
        Rule.of("p", "anonymous", "/redos", "(A+)+$", "allow"),
        Rule.of("p", "anonymous", "/*/*/*/*/*/*/*/*/*/*/x", "GET", "allow"),
    ):
        with pytest.raises(RuleError, match="take"):
            validate(rule, model)


def test_keymatch4_groups_are_refused() -> None:
    """A group in a keyMatch4 pattern would misalign Casbin's tokens: refused, not guessed."""
    with pytest.raises(PatternError, match="groups"):
        check("keyMatch4", "/a/(x)")


def test_syntax_python_may_change_is_refused() -> None:
    """'[[:alpha:]]' means something else to other engines and warns in Python: refused."""
    with pytest.raises(PatternError, match="ambiguous"):
        check("regexMatch", "[[:alpha:]]")


def _attacks(pattern: str) -> list[str]:
    """Inputs that make a backtracking matcher work hardest on this pattern: long runs of
    its own characters, ending in one that breaks the match."""
    chars = sorted({c for c in pattern if c.isalnum() or c in "/-_."} or {"a"})
    out = []
    for c in chars[:4]:
        out.append("/" + c * (MAX_VALUE - 2) + "!")
        out.append(("/" + c) * (MAX_VALUE // 2 - 1) + "!")
    out.append("/" * (MAX_VALUE - 1) + "!")
    return out


def _decides_quickly(predicate: object, values: list[str]) -> bool:
    """Run the predicate on every value in a thread; False if it has not finished in 10 s.

    A hang detector, not a speed assertion: the bound itself is measured by
    bench/patterns.py; an accepted pattern that backtracks catastrophically would take
    hours here, not milliseconds.
    """
    done = threading.Event()

    def run() -> None:
        for value in values:
            predicate(value)  # type: ignore[operator]
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(10)


#: Building blocks of hostile patterns: nested, overlapping and adjacent repeats.
_ATOMS = ["a", "/", ".", "[^/]", "[a/]", "(a|b)", "(ab)", "a?", "(a|ab)", "x"]
_QUANTS = ["", "", "*", "+", "?", "{0,9}", "{2,}", "*?"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_ATOMS), st.sampled_from(_QUANTS)), min_size=1, max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_accepted_hostile_patterns_decide_as_casbin_and_never_hang(
    parts: list[tuple[str, str]], anchor_start: bool, anchor_end: bool
) -> None:
    """Any generated pattern the check accepts is decided as Casbin decides it, and even
    on inputs built to make it backtrack it finishes."""
    pattern = ("^" if anchor_start else "") + "".join(a + q for a, q in parts)
    pattern += "$" if anchor_end else ""
    try:
        check("regexMatch", pattern)
    except PatternError:
        return
    predicate = compile_regex("regexMatch", pattern)
    values = _attacks(pattern)
    assert _decides_quickly(predicate, values), f"{pattern!r} did not finish"
    for value in [v[:40] for v in values] + ["", "a", "ab", "/a/b", "aab"]:
        assert predicate(value) is regex_match(value, pattern)


@pytest.mark.parametrize(("kind", "pattern"), EVERYDAY)
def test_accepted_patterns_decide_as_casbin(kind: str, pattern: str) -> None:
    """The engine's predicate for an accepted pattern is Casbin's function, value for value."""
    predicate = compile_predicate(kind, pattern)
    rng = random.Random(pattern)
    pieces = ["users", "42", "parent", "child", "7", "docs", "admin", "x", "", "GET", "a b"]
    values = ["/", "", "GET", "POST", "/users/42", "/parent/7/child/7", "/parent/7/child/8"]
    values += [
        "/" + "/".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(200)
    ]
    values += [v + "?q=1" for v in values[:50]] + [v + "\n" for v in values[:50]]
    for value in values:
        assert predicate(value) is bool(CASBIN[kind](value, pattern)), value


def test_prefix_shortcut_agrees_with_casbin_for_a_stored_newline() -> None:
    """A stored prefix holding a line break is decided by the regex, as Casbin does."""
    pattern = "/a\n/*"
    predicate = compile_predicate("keyMatch2", pattern)
    for value in ["/a\n/x", "/a\n/", "/a\n/x\n", "/a/x", "/a\n/x\ny"]:
        assert predicate(value) is key_match2(value, pattern), repr(value)


def test_refusal_names_the_field_and_line() -> None:
    """Through the row validator, a refused pattern names its field (and CSV line)."""
    model = PolicyModel.from_file(MODEL)
    with pytest.raises(RuleError) as refused:
        validate(Rule.of("p", "user", "/x", "(a|aa)+", "allow"), model, line=7)
    assert refused.value.field == "act"
    assert refused.value.line == 7


def test_python_syntax_is_parsed_as_re_parses_it() -> None:
    """The check reads a pattern with re's own parser: what compiles there is what's checked."""
    for pattern in ["a{,3}", "a{", "[]a]", "(?i)get"]:
        try:
            check("regexMatch", pattern)
        except PatternError:
            continue
        re.compile(pattern)  # accepted patterns compile


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(["/", "a", "Z", "0", ".", ":id", "-", "@", "~", "%", "/*"]),
        min_size=1,
        max_size=12,
    )
)
def test_the_plain_path_shortcut_accepts_only_what_the_full_check_accepts(parts: list[str]) -> None:
    """Plain keyMatch2 paths skip the parser; the full check must accept every one of them."""
    from authz.patterns import _PLAIN
    from authz.patterns import check_structure

    pattern = "/" + "".join(parts)
    if _PLAIN["keyMatch2"].match(pattern):
        check_structure("keyMatch2", pattern)  # raises if the shortcut were too generous


@pytest.mark.parametrize("methods", ["GET", "GET|POST", "PROPFIND|MKCOL|X-CUSTOM_1"])
def test_the_plain_method_shortcut_agrees_with_the_full_check(methods: str) -> None:
    """Literal alternations skip the parser and are what the full check accepts anyway."""
    from authz.patterns import check_structure

    check("regexMatch", methods)
    check_structure("regexMatch", methods)


# -- attacks beyond the regex functions ------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "models" / "examples"

#: globMatch patterns that took from 1.6 ms to half a second on a path within the caps.
SLOW_GLOBS = [
    ("/**/a/**/a/**/a/**/a/**/b", "/a" * 64),  # 520 ms
    ("/**/a/**/a/**/b", "/a" * 64),  # 3 ms
    ("/**/a/**/b", "/a" * 32 + "/" + "a" * 1900),  # 1.6 ms
    ("/" + "{a,b}" * 9 + "*x", "/" + "a" * 2000),  # 512 expressions: 28 ms
    ("/**/{a,b}/{a,b}/{a,b}/x", "/a" * 64),  # 0.5 ms
]


@pytest.mark.parametrize(("pattern", "attack"), SLOW_GLOBS)
def test_slow_glob_patterns_are_refused(pattern: str, attack: str) -> None:
    """Globs are regular expressions too (wcmatch): two "**" or braces are refused."""
    model = PolicyModel.from_file(EXAMPLES / "globmatch.conf")
    with pytest.raises(RuleError, match=r"'\*\*'|braces"):
        validate(Rule.of("p", "reader", pattern, "GET"), model)


@pytest.mark.parametrize("pattern", ["/docs/**", "/**/x.md", "*/**/x", "/a/*/b/*.md", "/a***/b"])
def test_one_globstar_is_accepted_and_decides_as_casbin(pattern: str) -> None:
    """One "**" runs in linear time; the engine's compiled glob is Casbin's globMatch."""
    check("globMatch", pattern)
    predicate = compile_predicate("globMatch", pattern)
    values = ["/", "/docs", "/docs/a", "/a/x.md", "/a/b/x.md", "/a/q/b/c.md", "/x", "/a/b/"]
    values += ["/aaab/b", "/.x.md", "/a/.b/x.md", ("/" + "a" * 31) * 64]
    for value in values:
        assert predicate(value) is glob_match(value, pattern), value


def test_glob_rows_beyond_the_library_cache_are_compiled_once() -> None:
    """wcmatch caches 256 compiled globs; the engine compiles each row's glob itself, so a
    policy with more glob rows than that does not recompile them on every decision."""
    predicates = [compile_predicate("globMatch", f"/r{i}/*/x/**") for i in range(300)]
    glob_cache = wcparse._compile  # the cache behind Casbin's globMatch
    glob_cache.cache_clear()
    for predicate in predicates:
        predicate("/r1/a/x/b")
    assert glob_cache.cache_info().currsize == 0


def test_every_function_applied_to_a_field_is_checked() -> None:
    """A field compared twice ("regexMatch(...) || keyMatch(...)") runs as a regex too:
    its pattern must pass the cost check, whichever function the matcher names last."""
    model = PolicyModel.from_text(
        "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n"
        "[role_definition]\ng = _, _\n[policy_effect]\ne = some(where (p.eft == allow))\n"
        "[matchers]\nm = g(r.sub, p.sub) && (regexMatch(r.obj, p.obj) || "
        "keyMatch(r.obj, p.obj)) && r.act == p.act\n"
    )
    with pytest.raises(RuleError, match="take"):
        validate(Rule.of("p", "anonymous", "/(a|aa)+$", "GET"), model)
    validate(Rule.of("p", "anonymous", "/docs/*", "GET"), model)
