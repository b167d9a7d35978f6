"""A decision index compiled from the policy rows: Casbin's answer in a few dict lookups.

Plain Casbin evaluates the matcher against every row. For the matcher shapes it can
compile (a conjunction of ``g(r.x, p.y)``, ``r.x == p.y`` and built-in matching
functions, under one of the three standard effects) the index instead

- resolves the subject to the names it reaches through ``g`` links (with Casbin's
  hierarchy limit), without remembering subjects it has never seen;
- looks rows up by subject or role, then by literal path, and tries pattern rows only
  for the names the subject holds;
- compiles every pattern once, to the very regex (or function) Casbin evaluates.

It agrees with ``casbin.Enforcer.enforce`` on the same model and rows, including which
row explains the decision; ``compile_index`` returns None, with the reason, for a
model it cannot honour exactly, and the caller falls back to Casbin.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass

from casbin.effect import AllowAndDenyEffector
from casbin.effect import AllowOverrideEffector
from casbin.effect import DenyOverrideEffector
from casbin.effect import get_effector
from casbin.model.function import FunctionMap
from casbin.util.builtin_operators import KEY_MATCH2_PATTERN
from casbin.util.builtin_operators import key_match

from authz.errors import EngineUnavailable
from authz.model import PolicyModel
from authz.rules import Rule

#: Casbin's default role manager follows at most this many levels (the subject is level 1).
MAX_HIERARCHY_LEVEL = 10
_METACHARS = frozenset(".^$*+?{}[]\\|():")

_G_TERM = re.compile(r"g\(\s*r_(\w+)\s*,\s*p_(\w+)\s*\)\Z")
_EQ_TERM = re.compile(r"(r|p)_(\w+)\s*==\s*(r|p)_(\w+)\Z")
_FN_TERM = re.compile(r"(\w+)\(\s*r_(\w+)\s*,\s*p_(\w+)\s*\)\Z")

_ATTRIBUTE = re.compile(r"\b[rp]_\w+\.")

ALLOW, DENY, OTHER = 1, 2, 0
Predicate = Callable[[str], bool]


class Unsupported(Exception):
    """The model has a shape the index cannot compile exactly."""


@dataclass(frozen=True)
class Term:
    """One conjunct of the matcher: compare request field ``r`` with row field ``p``."""

    kind: str  # "g", "eq" or a function name
    r: int  # index into the request values
    p: int  # index into the row values


@dataclass(frozen=True)
class Plan:
    """How a model's matcher and effect are evaluated by the index."""

    key: Term | None  # the g or == term rows are grouped by
    path: Term | None  # a term whose literal patterns are looked up directly
    checks: tuple[Term, ...]  # the other terms, tried per row
    effect: str  # "allow-override", "deny-override" or "allow-and-deny"
    eft: int | None  # index of the eft field, None when rows have none


def plan_for(model: PolicyModel) -> Plan:
    """Return the index plan of a model, or raise Unsupported naming why."""
    request = list(model.request)
    fields = list(model.policies.get("p", ()))
    matcher = model.matcher.strip()
    if any(token in matcher for token in ("||", "!", "eval(", " in ")) or _ATTRIBUTE.search(
        matcher
    ):
        raise Unsupported(f"matcher {matcher!r} is not a plain conjunction")
    functions = FunctionMap.load_function_map().get_functions()
    terms: list[Term] = []
    for raw in matcher.split("&&"):
        text = raw.strip()
        if match := _G_TERM.match(text):
            if model.roles.get("g") != 2:
                raise Unsupported("g must link two values (no domains)")
            terms.append(Term("g", _index(request, match[1]), _index(fields, match[2])))
        elif match := _EQ_TERM.match(text):
            sides = {match[1]: match[2], match[3]: match[4]}
            if set(sides) != {"r", "p"}:
                raise Unsupported(f"term {text!r} does not compare a request and a row field")
            terms.append(Term("eq", _index(request, sides["r"]), _index(fields, sides["p"])))
        elif (match := _FN_TERM.match(text)) and match[1] in functions:
            terms.append(Term(match[1], _index(request, match[2]), _index(fields, match[3])))
        else:
            raise Unsupported(f"matcher term {text!r} cannot be compiled")
    if sum(t.kind == "g" for t in terms) > 1:
        raise Unsupported("more than one g() term")
    effector = get_effector(model.effect)
    effect = {
        AllowOverrideEffector: "allow-override",
        DenyOverrideEffector: "deny-override",
        AllowAndDenyEffector: "allow-and-deny",
    }.get(type(effector))
    if effect is None:
        raise Unsupported(f"effect {model.effect!r} is not compiled (priority effects)")
    key = next((t for t in terms if t.kind == "g"), None) or next(
        (t for t in terms if t.kind == "eq"), None
    )
    rest = [t for t in terms if t is not key]
    path = next((t for t in rest if t.kind in ("keyMatch2", "keyMatch", "eq")), None)
    checks = tuple(t for t in rest if t is not path)
    eft = fields.index("eft") if "eft" in fields else None
    return Plan(key, path, checks, effect, eft)


def _index(names: list[str], name: str) -> int:
    if name not in names:
        raise Unsupported(f"unknown field {name!r}")
    return names.index(name)


# -- compiling patterns -----------------------------------------------------------------


def key_match2_regex(pattern: str) -> str:
    """The regex Casbin's keyMatch2 evaluates for a pattern (same text, so same cache)."""
    expr = pattern.replace("/*", "/.*")
    expr = KEY_MATCH2_PATTERN.sub(r"\g<1>[^\/]+\g<2>", expr, 0)
    if expr == "*":
        expr = "(.*)"
    return "^" + expr + "$"


def _broken(kind: str, pattern: str, error: Exception) -> Predicate:
    def fail(_value: str) -> bool:
        # Casbin raises when it evaluates such a row; so do we, and the caller fails closed.
        raise EngineUnavailable(f"{kind} pattern {pattern!r} does not compile: {error}")

    return fail


def compile_predicate(kind: str, pattern: str) -> Predicate:
    """Return ``value -> bool`` equal to Casbin's ``kind(value, pattern)``."""
    if kind == "eq":
        return pattern.__eq__
    if kind in ("keyMatch2", "regexMatch"):
        expr = key_match2_regex(pattern) if kind == "keyMatch2" else pattern
        try:
            matcher = re.compile(expr).match
        except re.error as e:
            return _broken(kind, pattern, e)
        return lambda value: matcher(value) is not None
    if kind == "keyMatch":
        return lambda value: key_match(value, pattern)
    function = FunctionMap.load_function_map().get_functions()[kind]
    return lambda value: bool(function(value, pattern))


def literal_key(kind: str, pattern: str) -> str | None:
    """Return the one value a pattern matches (so it can be looked up), or None."""
    if kind == "eq":
        return pattern
    if kind == "keyMatch" and "*" not in pattern:
        return pattern
    if kind == "keyMatch2" and pattern != "*" and not (_METACHARS & set(pattern)):
        return pattern  # "^p$" also matches p + "\n"; decide() looks that up too
    return None


# -- the index --------------------------------------------------------------------------

#: (sequence number, rule, effect code, per-row checks)
Entry = tuple[int, Rule, int, tuple[tuple[int, Predicate], ...]]


@dataclass(frozen=True)
class Bucket:
    """The rows of one subject or role: literal paths by value, patterns in a list."""

    literal: Mapping[str, tuple[Entry, ...]]
    scan: tuple[Entry, ...]


class DecisionIndex:
    """Immutable compiled form of one snapshot's rows."""

    def __init__(
        self,
        plan: Plan,
        buckets: dict[str, Bucket],
        links: dict[str, tuple[str, ...]],
        predicates: dict[tuple[str, str], Predicate],
    ) -> None:
        self.plan = plan
        self._buckets = buckets
        self._links = links
        self._predicates = predicates
        self._closures: dict[tuple[str, int], tuple[str, ...]] = {}
        self.decide = self._compile_decide()  # type: ignore[method-assign]

    # -- building -----------------------------------------------------------------------

    @classmethod
    def build(cls, plan: Plan, rows: Mapping[Rule, int]) -> DecisionIndex:
        """Compile rows (rule -> sequence number, in policy order)."""
        index = cls(plan, {}, {}, {})
        grouped: dict[str, list[Entry]] = {}
        links: dict[str, list[str]] = {}
        for rule, seq in rows.items():
            if rule.ptype == "p":
                entry = index._entry(rule, seq)
                grouped.setdefault(index._bucket_key(rule), []).append(entry)
            elif rule.ptype == "g" and len(rule.values) >= 2:
                links.setdefault(rule.values[0], []).append(rule.values[1])
        index._buckets = {k: index._make_bucket(v) for k, v in grouped.items()}
        index._links = {k: tuple(v) for k, v in links.items()}
        index.decide = index._compile_decide()  # type: ignore[method-assign]
        return index

    def with_changes(
        self, added: Iterable[tuple[Rule, int]], removed: Iterable[Rule]
    ) -> DecisionIndex:
        """Return a new index with rows added and removed; untouched buckets are shared."""
        buckets = dict(self._buckets)
        links = self._links
        touched: dict[str, list[Entry]] = {}
        gone: dict[str, set[Rule]] = {}
        link_changes: list[tuple[str, str, bool]] = []
        for rule in removed:
            if rule.ptype == "p":
                gone.setdefault(self._bucket_key(rule), set()).add(rule)
            elif rule.ptype == "g":
                link_changes.append((rule.values[0], rule.values[1], False))
        for rule, seq in added:
            if rule.ptype == "p":
                touched.setdefault(self._bucket_key(rule), []).append(self._entry(rule, seq))
            elif rule.ptype == "g":
                link_changes.append((rule.values[0], rule.values[1], True))
        for key in set(touched) | set(gone):
            old = self._buckets.get(key)
            entries = [e for e in _entries(old) if e[1] not in gone.get(key, ())]
            entries += touched.get(key, [])
            if entries:
                buckets[key] = self._make_bucket(sorted(entries, key=lambda e: e[0]))
            else:
                buckets.pop(key, None)
        if link_changes:
            links = dict(links)
            for member, role, add in link_changes:
                roles = list(links.get(member, ()))
                if add:
                    roles.append(role)
                elif role in roles:
                    roles.remove(role)
                if roles:
                    links[member] = tuple(roles)
                else:
                    links.pop(member, None)
        index = DecisionIndex(self.plan, buckets, links, self._predicates)
        if not link_changes:
            index._closures = self._closures  # the links are unchanged: share the closures
            index.decide = index._compile_decide()  # type: ignore[method-assign]
        return index

    def _bucket_key(self, rule: Rule) -> str:
        key = self.plan.key
        return rule.values[key.p] if key is not None else ""

    def _predicate(self, kind: str, pattern: str) -> Predicate:
        cache_key = (kind, pattern)
        found = self._predicates.get(cache_key)
        if found is None:
            found = self._predicates[cache_key] = compile_predicate(kind, pattern)
        return found

    def _entry(self, rule: Rule, seq: int) -> Entry:
        plan = self.plan
        values = rule.values
        checks = tuple((t.r, self._predicate(t.kind, values[t.p])) for t in plan.checks)
        if plan.path is not None and literal_key(plan.path.kind, values[plan.path.p]) is None:
            path = plan.path
            checks = ((path.r, self._predicate(path.kind, values[path.p])), *checks)
        if plan.eft is None:
            effect = ALLOW
        else:
            eft = values[plan.eft]
            effect = ALLOW if eft == "allow" else DENY if eft == "deny" else OTHER
        return (seq, rule, effect, checks)

    def _make_bucket(self, entries: Iterable[Entry]) -> Bucket:
        path = self.plan.path
        literal: dict[str, list[Entry]] = {}
        scan: list[Entry] = []
        for entry in entries:
            key = literal_key(path.kind, entry[1].values[path.p]) if path is not None else None
            if key is None:
                scan.append(entry)
            else:
                literal.setdefault(key, []).append(entry)
        return Bucket({k: tuple(v) for k, v in literal.items()}, tuple(scan))

    # -- reading ------------------------------------------------------------------------

    def names_for(self, subject: str) -> tuple[str, ...]:
        """Return the subject and every name it reaches through g links (Casbin's limit).

        Casbin's role manager looks MAX_HIERARCHY_LEVEL levels deep, the subject being
        the first. Closures of roles are cached per remaining depth (bounded by the
        policy); a subject's own closure is never stored, so subjects the policy has
        never seen cost no memory.
        """
        direct = self._links.get(subject)
        if direct is None:
            return (subject,)
        depth = MAX_HIERARCHY_LEVEL - 2  # levels left below the subject's direct roles
        if len(direct) == 1:
            tail = self._closure(direct[0], depth)
            return tail if subject in tail else (subject, *tail)
        seen = {subject: None}
        for role in direct:
            seen.update(dict.fromkeys(self._closure(role, depth)))
        return tuple(seen)

    def _closure(self, name: str, depth: int) -> tuple[str, ...]:
        """``name`` and the names it reaches in at most ``depth`` more hops."""
        key = (name, depth)
        found = self._closures.get(key)  # type: ignore[call-overload]
        if found is not None:
            return found  # type: ignore[no-any-return]
        seen = {name: None}
        frontier = [name]
        for _ in range(depth):
            nxt = []
            for current in frontier:
                for parent in self._links.get(current, ()):
                    if parent not in seen:
                        seen[parent] = None
                        nxt.append(parent)
            if not nxt:
                break
            frontier = nxt
        result = tuple(seen)
        self._closures[key] = result  # type: ignore[index]
        return result

    def matches(self, request: tuple[str, ...]) -> list[Entry]:
        """Return the rows whose matcher is true for the request."""
        plan = self.plan
        key = plan.key
        if key is None:
            names: tuple[str, ...] = ("",)
        elif key.kind == "g":
            names = self.names_for(request[key.r])
        else:
            names = (request[key.r],)
        path = plan.path
        path_value = request[path.r] if path is not None else ""
        trailing = path is not None and path.kind == "keyMatch2" and path_value.endswith("\n")
        found: list[Entry] = []
        buckets = self._buckets
        for name in names:
            bucket = buckets.get(name)
            if bucket is None:
                continue
            literal = bucket.literal
            if literal:
                hit = literal.get(path_value)
                if trailing:  # "^p$" also matches p followed by one newline
                    hit = (hit or ()) + literal.get(path_value[:-1], ())
                if hit:
                    for entry in hit:
                        for field, predicate in entry[3]:
                            if not predicate(request[field]):
                                break
                        else:
                            found.append(entry)
            for entry in bucket.scan:
                for field, predicate in entry[3]:
                    if not predicate(request[field]):
                        break
                else:
                    found.append(entry)
        return found

    def _compile_decide(self) -> Callable[[tuple[str, ...]], tuple[bool, Rule | None]]:
        """Return ``decide`` specialised for this index: locals only on the hot path."""
        plan = self.plan
        if plan.key is None or plan.key.kind != "g" or plan.path is None:
            return self._decide_general
        key_r = plan.key.r
        path_r = plan.path.r
        newline_too = plan.path.kind == "keyMatch2"
        settling = ALLOW if plan.effect == "allow-override" else DENY
        effect_name = plan.effect
        links_get = self._links.get
        buckets_get = self._buckets.get
        closures_get = self._closures.get
        closure = self._closure
        depth = MAX_HIERARCHY_LEVEL - 2

        def decide(request: tuple[str, ...]) -> tuple[bool, Rule | None]:
            subject = request[key_r]
            direct = links_get(subject)
            if direct is None:
                names: tuple[str, ...] = (subject,)
            elif len(direct) == 1:
                tail = closures_get((direct[0], depth)) or closure(direct[0], depth)
                names = tail if subject in tail else (subject, *tail)
            else:
                names = self.names_for(subject)
            value = request[path_r]
            first = last = None
            any_allow = False
            for name in names:
                bucket = buckets_get(name)
                if bucket is None:
                    continue
                candidates = bucket.scan
                literal = bucket.literal
                if literal:
                    hit = literal.get(value)
                    if newline_too and value.endswith("\n"):
                        hit = (hit or ()) + literal.get(value[:-1], ())
                    if hit:
                        candidates = hit + candidates
                for entry in candidates:
                    for field, predicate in entry[3]:
                        if not predicate(request[field]):
                            break
                    else:
                        effect = entry[2]
                        if effect == settling and (first is None or entry[0] < first[0]):
                            first = entry
                        if last is None or entry[0] > last[0]:
                            last = entry
                        if effect == ALLOW:
                            any_allow = True
            if last is None:
                return effect_name == "deny-override", None
            if effect_name == "allow-override":
                allowed = first is not None
            elif effect_name == "deny-override":
                allowed = first is None
            else:
                allowed = first is None and any_allow
            return allowed, (first or last)[1]

        return decide

    def _decide_general(self, request: tuple[str, ...]) -> tuple[bool, Rule | None]:
        return DecisionIndex.decide(self, request)

    def decide(self, request: tuple[str, ...]) -> tuple[bool, Rule | None]:
        """Return (allowed, explaining rule) exactly as Casbin's enforce_ex would.

        Casbin walks the rows in policy order and stops at the first row that settles
        the effect (an allow for allow-override, a deny otherwise); that row explains
        the decision, or else the last matching row does.
        """
        found = self.matches(request)
        if not found:
            return self.plan.effect == "deny-override", None
        settling = ALLOW if self.plan.effect == "allow-override" else DENY
        first_settling = None
        last = found[0]
        any_allow = False
        for entry in found:
            effect = entry[2]
            if effect == settling and (first_settling is None or entry[0] < first_settling[0]):
                first_settling = entry
            if entry[0] > last[0]:
                last = entry
            if effect == ALLOW:
                any_allow = True
        effect_name = self.plan.effect
        if effect_name == "allow-override":
            allowed = first_settling is not None
        elif effect_name == "deny-override":
            allowed = first_settling is None
        else:
            allowed = first_settling is None and any_allow
        return allowed, (first_settling or last)[1]


def _entries(bucket: Bucket | None) -> list[Entry]:
    if bucket is None:
        return []
    out = [e for group in bucket.literal.values() for e in group]
    out.extend(bucket.scan)
    return out


def compile_index(model: PolicyModel, rows: Mapping[Rule, int]) -> DecisionIndex:
    """Compile an index for a supported model; raise Unsupported otherwise."""
    return DecisionIndex.build(plan_for(model), rows)
