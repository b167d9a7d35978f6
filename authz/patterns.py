"""Path and method patterns: what Casbin evaluates for them, and a bound on what that costs.

Casbin's matching functions (``keyMatch2``, ``regexMatch`` and the others) turn a row's
pattern into a Python regular expression and run it with :mod:`re`, a backtracking
engine. Some expressions take exponential or high polynomial time on a crafted input
(``(A+)+$`` against ``AAAA...!``, ``/*/*/*/*/x`` against a deep path): one such row and
one such request would hold a worker's interpreter for seconds.

The engine keeps Casbin's exact semantics by evaluating the very same expressions with
the very same :mod:`re` module, and bounds their cost instead, in two ways:

- every request value is capped (:data:`MAX_VALUE`, and the path and method limits in
  :mod:`authz.paths`) before any pattern runs;
- a pattern is accepted only when a structural estimate of its worst-case backtracking
  work on a value of that length stays within :data:`BUDGET` (at most about 0.2 ms on
  this project's 2-core machine: bench/patterns.py). Nested quantifiers, repeated
  alternations, backreferences and lookaround are refused outright, and so is more than
  one wildcard that can stretch over the same text.

A refused pattern raises :class:`PatternError` with a reason that says what to write
instead. Why not a linear-time engine (RE2): its Python binding costs 5-7 µs per match
against 0.2-0.5 µs for :mod:`re` on these patterns, and its syntax differs from
Python's (``$`` before a final newline, ``\\d``/``\\w`` on non-ASCII, POSIX classes),
so it could not give Casbin's decision for every accepted pattern.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

from wcmatch import glob

from authz.errors import AuthzError

try:  # the parser behind re.compile; private, so imported defensively
    from re import _constants as _sre  # type: ignore[attr-defined]
    from re import _parser as _parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python < 3.11 is not supported
    raise

#: The longest request value (subject, path or method) the engine decides on.
MAX_VALUE = 2048
#: The most basic matching steps a pattern may need on a value of MAX_VALUE characters.
BUDGET = 2**16
#: The functions whose patterns Casbin evaluates as regular expressions.
REGEX_FUNCTIONS = frozenset({"regexMatch", "keyMatch2", "keyMatch3", "keyMatch4", "keyMatch5"})
#: The flags Casbin's globMatch passes to wcmatch.
GLOB_FLAGS = glob.GLOBSTAR | glob.BRACE

# Casbin's own translations (casbin.util.builtin_operators), reproduced so that the
# expression checked here is character for character the one Casbin runs.
_KEY_MATCH2 = re.compile(r"(.*?):[^\/]+(.*?)")
_KEY_MATCH3 = re.compile(r"(.*?){[^\/]+?}(.*?)")
_KEY_MATCH4 = re.compile(r"{([^/]+)}")
_KEY_MATCH5 = re.compile(r"{[^/]+}")

_SINGLE = frozenset({_sre.LITERAL, _sre.NOT_LITERAL, _sre.ANY, _sre.IN, _sre.CATEGORY})
_REPEATS = frozenset(
    op
    for op in (
        _sre.MAX_REPEAT,
        _sre.MIN_REPEAT,
        getattr(_sre, "POSSESSIVE_REPEAT", None),
    )
    if op is not None
)
_REFUSED = {
    _sre.GROUPREF: "backreferences",
    _sre.GROUPREF_EXISTS: "conditional groups",
    _sre.ASSERT: "lookahead and lookbehind",
    _sre.ASSERT_NOT: "lookahead and lookbehind",
}


#: Patterns that are always cheap, accepted without parsing (most rows of a large policy):
#: keyMatch2 paths with no regex operator but ":name" segments and one final "/*" (each
#: ":name" becomes [^/]+, which "/" or the end bounds; a final ".*" has nothing after it),
#: and methods that are a literal or an alternation of literals.
_PLAIN = {
    "keyMatch2": re.compile(r"/[^*+?{}\[\]\\|()^$]*(?:/\*)?\Z"),
    "regexMatch": re.compile(r"[A-Za-z0-9_-]+(?:\|[A-Za-z0-9_-]+)*\Z"),
}
_NEVER = re.compile(r"(?!)")


class PatternError(AuthzError):
    """A pattern is refused: it does not compile, or could take too long to evaluate."""


def to_regex(kind: str, pattern: str) -> str:
    """Return the regular expression Casbin's ``kind`` function evaluates for ``pattern``."""
    if kind == "regexMatch":
        return pattern
    expr = pattern.replace("/*", "/.*")
    if kind == "keyMatch2":
        expr = _KEY_MATCH2.sub(r"\g<1>[^\/]+\g<2>", expr, 0)
        if expr == "*":
            expr = "(.*)"
    elif kind == "keyMatch3":
        expr = _KEY_MATCH3.sub(r"\g<1>[^\/]+\g<2>", expr, 0)
    elif kind == "keyMatch4":
        expr = _KEY_MATCH4.sub("([^/]+)", expr)
    elif kind == "keyMatch5":
        expr = _KEY_MATCH5.sub(r"[^/]+", expr, 0)
    else:
        raise ValueError(f"{kind} is not a regular-expression function")
    return "^" + expr + "$"


def check(kind: str, pattern: str) -> None:
    """Refuse a pattern of a regex function that does not compile or could run too long.

    :raises PatternError: with the reason, fit to show next to the field.
    """
    if kind == "globMatch":
        _check_glob(pattern)
        return
    if kind not in REGEX_FUNCTIONS or _PLAIN.get(kind, _NEVER).match(pattern):
        return
    check_structure(kind, pattern)


def check_structure(kind: str, pattern: str) -> None:
    """The full check, without the shortcut for plain patterns (which it always accepts)."""
    expr = to_regex(kind, pattern)
    parsed = _parse_regex(expr, pattern)
    if kind == "keyMatch4":
        tokens = len(_KEY_MATCH4.findall(pattern.replace("/*", "/.*")))
        if parsed.state.groups - 1 != tokens:
            raise PatternError(
                f"pattern {pattern!r}: keyMatch4 patterns may not contain groups '(...)'; "
                "name a segment with {name}"
            )
    ignore_case = bool(parsed.state.flags & _sre.SRE_FLAG_IGNORECASE)
    paths, ambiguous, size, before = _cost(list(parsed), ignore_case, pattern, top=True)
    work = paths * (before + (size - before + 1) * (MAX_VALUE + 1) ** ambiguous)
    if ambiguous > 1 or work > BUDGET:
        raise PatternError(
            f"pattern {pattern!r} could take too long to match: "
            + (
                "more than one wildcard (*, +, {n,}) can stretch over the same text; "
                "use :name or [^/]+ for one path segment"
                if ambiguous > 1
                else "too many alternatives or too long a pattern after a wildcard"
            )
        )


def _check_glob(pattern: str) -> None:
    # wcmatch translates a glob into Python regular expressions (with atomic groups, so a
    # segment's "*" runs in linear time), but "**" becomes a lazy wildcard over any number
    # of segments: two of them backtrack over each other ("/**/a/**/a/**/b" takes 0.5 s on
    # a 64-segment path). Braces expand into one expression per alternative, each run in
    # turn: "{a,b}" nine times is 512 expressions (28 ms on every decision).
    wide = _glob_form(pattern).split("/").count("**")
    if wide > 1:
        raise PatternError(
            f"pattern {pattern!r} could take too long to match: more than one '**'; "
            "use '*' for one path segment"
        )
    if "{" in pattern or "}" in pattern:
        raise PatternError(
            f"pattern {pattern!r}: braces '{{a,b}}' are not supported (each alternative is "
            "matched in turn); write one rule per alternative"
        )


def _glob_form(pattern: str) -> str:
    """The glob Casbin's globMatch hands to wcmatch (before its own "/**" brace)."""
    while pattern.startswith("*/"):
        pattern = pattern[1:]
    parts = pattern.split("/")
    return "/".join(p if p == "**" else re.sub(r"\*{2,}", "*", p) for p in parts)


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """Return ``value -> bool``: Casbin's ``globMatch(value, pattern)``, compiled once.

    Casbin compiles the glob on every call through wcmatch's cache of 256 patterns; a
    policy with more glob rows than that would recompile (about 0.1-2 ms each) on every
    decision. Compiling once here gives the same answers at a constant cost.
    """
    form = _glob_form(pattern)
    if form.endswith("/**"):
        form = "{" + form[:-3] + "," + form + "}"
    return glob.compile(form, flags=GLOB_FLAGS).match


def compile_regex(kind: str, pattern: str) -> Callable[[str], bool]:
    """Return ``value -> bool``: Casbin's ``kind(value, pattern)`` for a regex function.

    :raises PatternError: when the expression does not compile, or (keyMatch4) when
        Casbin itself would raise evaluating it.
    """
    expr = to_regex(kind, pattern)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            match = re.compile(expr).match
    except re.error as e:
        raise PatternError(f"pattern {pattern!r} does not compile: {e}") from e
    if kind == "keyMatch4":
        tokens = _KEY_MATCH4.findall(pattern.replace("/*", "/.*"))
        if re.compile(expr).groups != len(tokens):
            # Casbin raises on every value this pattern matches.
            raise PatternError(f"pattern {pattern!r}: keyMatch4 patterns may not contain groups")
        return _key_match4(match, tokens)
    if kind == "keyMatch5":
        return lambda value: match(value.split("?", 1)[0]) is not None
    return lambda value: match(value) is not None


def _key_match4(
    match: Callable[[str], re.Match[str] | None], tokens: list[str]
) -> Callable[[str], bool]:
    def key_match4(value: str) -> bool:
        found = match(value)
        if found is None:
            return False
        # A name used twice ("/{id}/x/{id}") must stand for the same text both times.
        seen: dict[str, str] = {}
        return all(
            seen.setdefault(t, part) == part for t, part in zip(tokens, found.groups(), strict=True)
        )

    return key_match4


def _parse_regex(expr: str, shown: str) -> Any:
    with warnings.catch_warnings():
        # Python warns about syntax whose meaning will change ("possible nested set"):
        # such a pattern could mean one thing now and another after an upgrade.
        warnings.simplefilter("error")
        try:
            re.compile(expr)
            return _parse.parse(expr)
        except re.error as e:
            raise PatternError(f"pattern {shown!r} does not compile: {e}") from e
        except (FutureWarning, DeprecationWarning) as e:
            raise PatternError(f"pattern {shown!r} is ambiguous: {e}") from e


def _chars(item: tuple[Any, Any], ignore_case: bool) -> set[int] | None:
    """The code points a single-character item matches, when small and known; else None."""
    op, arg = item
    if ignore_case:
        return None
    if op == _sre.LITERAL:
        return {arg}
    if op == _sre.IN:
        out: set[int] = set()
        for sub_op, sub_arg in arg:
            if sub_op == _sre.LITERAL:
                out.add(sub_arg)
            elif sub_op == _sre.RANGE and sub_arg[1] - sub_arg[0] < 256:
                out.update(range(sub_arg[0], sub_arg[1] + 1))
            else:  # negation, categories, wide ranges: not a small known set
                return None
        return out
    return None


def _disjoint(
    repeated: tuple[Any, Any], neighbour: tuple[Any, Any] | None, ignore_case: bool
) -> bool:
    """Whether ``neighbour`` is one character that the repeated item can never take."""
    if neighbour is None or neighbour[0] not in _SINGLE:
        return False
    follow = _chars(neighbour, ignore_case)
    if not follow:
        return False
    op, arg = repeated
    if ignore_case:
        return False
    if op == _sre.ANY:
        return False
    if op == _sre.LITERAL:
        return arg not in follow
    if op == _sre.NOT_LITERAL:
        return follow == {arg}
    if op == _sre.IN:
        if arg and arg[0][0] == _sre.NEGATE:
            # [^/]+ followed by "/": the repeat can never take the character that follows.
            excluded = _chars((_sre.IN, arg[1:]), ignore_case)
            return excluded is not None and follow <= excluded
        matched = _chars(repeated, ignore_case)
        return matched is not None and not (matched & follow)
    return False


def _cost(
    items: list[tuple[Any, Any]], ignore_case: bool, shown: str, top: bool = False
) -> tuple[int, int, int, int]:
    """Return (paths, ambiguous, size, before) for a sequence of parsed items.

    ``size`` estimates the steps of one pass over the sequence: a character is one step,
    a bounded repeat its maximum, a repeated group eight times its body (the engine's
    general loop is that much slower than its single-character one), and an unbounded
    repeat that cannot give text back usefully a pass over the whole value.
    ``paths`` bounds how many passes alternatives and bounded repeats can cause.
    ``ambiguous`` counts unbounded repeats that can hand text back and forth, each
    multiplying the work by the value's length. An unbounded repeat of one character
    class is not ambiguous

    - when what follows it can never be a character it takes (``[^/]+/``): giving text
      back cannot help, so every give-back fails at once;
    - after an ambiguous repeat, only when the character before it is one it cannot
      take (``.*/[^/]+``): its tries then start at distinct places and never overlap,
      so together they cost one pass over the value;
    - at the very end of the pattern (``[^/]+$``): it gives text back once, not per try.

    ``before`` is the size of what precedes the first ambiguous repeat: walked once per
    path, where what follows is walked again for every way of splitting the text.
    """
    items = _flatten(items, ignore_case)
    paths, ambiguous, size, before = 1, 0, 0, -1
    after_ambiguous = False
    for i, (op, arg) in enumerate(items):
        leading = items[i - 1] if i > 0 else None
        following = items[i + 1] if i + 1 < len(items) else None
        last = top and all(o == _sre.AT for o, _ in items[i + 1 :])
        if op in _REFUSED:
            raise PatternError(f"pattern {shown!r}: {_REFUSED[op]} are not supported")
        found = 0
        size_before = size
        if op == _sre.BRANCH:
            alternatives = [_cost(list(alt), ignore_case, shown) for alt in arg[1]]
            paths *= sum(alt[0] for alt in alternatives)
            found = max(alt[1] for alt in alternatives)
            size += sum(alt[2] for alt in alternatives)
        elif op == _sre.SUBPATTERN:
            case = ignore_case or bool(arg[1] & _sre.SRE_FLAG_IGNORECASE)
            p, found, z, _ = _cost(list(arg[-1]), case, shown)
            paths *= p
            size += z
        elif op == getattr(_sre, "ATOMIC_GROUP", None):
            p, found, z, _ = _cost(list(arg), ignore_case, shown)
            paths *= p
            size += z
        elif op in _REPEATS:
            low, high, body = arg[0], arg[1], list(arg[2])
            single = len(body) == 1 and body[0][0] in _SINGLE
            step = 1
            if not single:
                if high > 1 and not _fixed(body):
                    raise PatternError(
                        f"pattern {shown!r}: a repeated group may not hold a quantifier or "
                        "an alternation (nested repetition can take exponential time)"
                    )
                p, found, z, _ = _cost(body, ignore_case, shown)
                paths *= p
                step = 8 * max(z, 1)
            follow_guard = single and _disjoint(body[0], following, ignore_case)
            lead_guard = single and _disjoint(body[0], leading, ignore_case)
            if high == _sre.MAXREPEAT:
                if after_ambiguous and lead_guard:
                    size += step  # its tries never overlap: one pass in all, counted once
                elif not after_ambiguous and (follow_guard or (single and last)):
                    size += step * MAX_VALUE
                else:
                    found += 1
                    size += step
            else:
                size += step * high
                if high > low and not follow_guard:
                    paths *= high - low + 1
        elif op in _SINGLE:
            size += 1
        elif op != _sre.AT:
            raise PatternError(f"pattern {shown!r}: unsupported syntax ({op})")
        if found and before < 0:
            before = size_before
        ambiguous += found
        after_ambiguous = after_ambiguous or found > 0
    return paths, ambiguous, size, before if before >= 0 else size


def _flatten(items: list[tuple[Any, Any]], ignore_case: bool) -> list[tuple[Any, Any]]:
    """Inline plain groups, so that a repeat inside "([^/]+)" sees its real neighbours."""
    out: list[tuple[Any, Any]] = []
    for op, arg in items:
        if (
            op == _sre.SUBPATTERN
            and not (arg[1] & _sre.SRE_FLAG_IGNORECASE)
            or (op == _sre.SUBPATTERN and ignore_case)
        ):
            out.extend(_flatten(list(arg[-1]), ignore_case))
        else:
            out.append((op, arg))
    return out


def _fixed(body: list[tuple[Any, Any]]) -> bool:
    """Whether a group body matches text of one fixed shape: no repeat, no alternation."""
    for op, arg in body:
        if op in _SINGLE or op == _sre.AT:
            continue
        if op == _sre.SUBPATTERN and _fixed(list(arg[-1])):
            continue
        return False
    return True
