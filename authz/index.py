"""A decision index compiled from the policy rows: Casbin's answer in a few dict lookups.

Plain Casbin evaluates the matcher against every row. For the matcher shapes it can
compile (a conjunction of ``g(r.x, p.y)``, ``r.x == p.y`` and built-in matching
functions, under one of the three standard effects) the index instead

- resolves the subject to the names it reaches through ``g`` links (with Casbin's
  hierarchy limit), without remembering subjects it has never seen;
- looks rows up by subject or role, then by the shape of their path pattern: a literal
  path, a final ``:name`` segment and a final ``/*`` are matched by dict lookups and
  ``str.startswith`` shared by every row of that shape (path_shape), with no regex,
  closure or cache entry per pattern; a request path holding a line break, which
  keyMatch2's ``$`` and ``.`` treat specially, takes each pattern's own regex;
- compiles every other pattern once, to the very regex (or function) Casbin evaluates,
  and tests a plain method alternation ("GET|POST") with ``str.startswith`` (what
  ``re.match`` does for it).

It agrees with ``casbin.Enforcer.enforce`` on the same model and rows, including which
row explains the decision; ``compile_index`` returns None, with the reason, for a
model it cannot honour exactly, and the caller falls back to Casbin.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from casbin.effect import AllowAndDenyEffector
from casbin.effect import AllowOverrideEffector
from casbin.effect import DenyOverrideEffector
from casbin.effect import get_effector
from casbin.model.function import FunctionMap
from casbin.util.builtin_operators import key_match

from authz import patterns
from authz.decision import Decision
from authz.decision import Reason
from authz.model import PolicyModel
from authz.patterns import PatternError
from authz.rules import Rule
from authz.rules import is_role

#: Casbin's default role manager follows at most this many levels (the subject is level 1).
MAX_HIERARCHY_LEVEL = 10
#: The changed links (and buckets) are compacted into a new base beyond max(MIN, size /
#: SHARE) members.
LINK_OVERLAY_MIN, LINK_OVERLAY_SHARE = 256, 32
#: Not in the link overlay (a member whose links did not change since the last compaction).
_MISSING: Any = object()
_METACHARS = frozenset(".^$*+?{}[]\\|():")

_G_TERM = re.compile(r"g\(\s*r_(\w+)\s*,\s*p_(\w+)\s*\)\Z")
_EQ_TERM = re.compile(r"(r|p)_(\w+)\s*==\s*(r|p)_(\w+)\Z")
_FN_TERM = re.compile(r"(\w+)\(\s*r_(\w+)\s*,\s*p_(\w+)\s*\)\Z")

_ATTRIBUTE = re.compile(r"\b[rp]_\w+\.")

ALLOW, DENY, OTHER = 1, 2, 0
NO_MATCH, ALLOW_RULE, DENY_RULE = Reason.NO_MATCH, Reason.ALLOW_RULE, Reason.DENY_RULE
Predicate = Callable[[str], bool]
#: How a non-path field is tested: a predicate, or the alternatives the value starts with.
Check = Predicate | tuple[str, ...]
#: A regexMatch pattern of plain words: "GET", "GET|POST" (no operator but "|").
_ALTERNATION = re.compile(r"[A-Za-z0-9_-]+(?:\|[A-Za-z0-9_-]+)*\Z")


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
    return patterns.to_regex("keyMatch2", pattern)


class BrokenPattern(Unsupported, PatternError):
    """A stored row's pattern cannot be evaluated; Casbin is left to decide (and fail)."""


def compile_predicate(kind: str, pattern: str) -> Predicate:
    """Return ``value -> bool`` equal to Casbin's ``kind(value, pattern)``.

    :raises BrokenPattern: when Casbin would raise evaluating it. Where such a row is
        evaluated depends on Casbin's row and term order, so a snapshot holding one is
        decided by Casbin itself rather than by an index that might guess differently.
    """
    if kind == "eq":
        return pattern.__eq__
    if (
        kind == "keyMatch2"
        and pattern.endswith("/*")
        and not (_METACHARS & set(pattern[:-1]))
        and "\n" not in pattern
    ):
        # "/reports/*" is Casbin's "^/reports/.*$": the prefix, then anything without a
        # line break ('.' stops at one), except that '$' lets one final "\n" through.
        prefix = pattern[:-1]

        def under_prefix(value: str) -> bool:
            return value.startswith(prefix) and (
                "\n" not in value or (value.endswith("\n") and value.count("\n") == 1)
            )

        return under_prefix
    if kind in patterns.REGEX_FUNCTIONS:
        try:
            return patterns.compile_regex(kind, pattern)
        except PatternError as e:
            raise BrokenPattern(str(e)) from e
    if kind == "keyMatch":
        return lambda value: key_match(value, pattern)
    if kind == "globMatch":
        try:
            return patterns.compile_glob(pattern)
        except Exception as e:  # noqa: BLE001 - whatever the glob library raises
            raise BrokenPattern(f"{kind} pattern {pattern!r} cannot be evaluated: {e}") from e
    function = FunctionMap.load_function_map().get_functions()[kind]
    try:
        function("/", pattern)
    except Exception as e:  # noqa: BLE001 - whatever Casbin's function raises
        raise BrokenPattern(f"{kind} pattern {pattern!r} cannot be evaluated: {e}") from e
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

#: A path pattern's shape: looked up as it is, by the value's text up to its last "/"
#: (a final ":name" segment), by prefix (a final "/*"), or scanned with its predicate.
LITERAL, HEAD, PREFIX, SCAN = 0, 1, 2, 3
#: keyMatch2 patterns of a literal part (no regex operator, no ":", no line break),
#: optionally ending in "*" or in ":name" (a name is anything up to the next "/": Casbin
#: replaces ``:[^/]+`` whatever its characters). Only the shapes whose literal part ends
#: in "/" are matched by prefix or head; the rest keep Casbin's regex.
_KEY_MATCH2_SHAPE = re.compile(r"([^.^$*+?{}\[\]\\|():\n]*)(?:(\*)|:([^/\n]+))?\Z")


def path_shape(kind: str, pattern: str) -> tuple[int, str]:
    """Return how the index matches a path pattern: (shape, key).

    - ``LITERAL``: the pattern matches only the key (and, for keyMatch2, the key and a
      final line break, which decide() leaves to Casbin's own regex);
    - ``HEAD``: ``prefix/:name``, Casbin's ``^prefix/[^/]+$``: a value whose text up to
      its last "/" is the key, followed by at least one character;
    - ``PREFIX``: ``prefix/*``, Casbin's ``^prefix/.*$``: a value starting with the key
      (with no line break in it: those go to the regex too);
    - ``SCAN``: anything else, evaluated by its predicate (compile_predicate).
    """
    if kind == "keyMatch2":
        shape = _KEY_MATCH2_SHAPE.match(pattern)
        if shape is None:
            return SCAN, ""
        literal, star, name = shape.groups()
        if star is None and name is None:
            return LITERAL, pattern
        if literal.endswith("/"):
            return (PREFIX if star is not None else HEAD), literal
        return SCAN, ""
    key = literal_key(kind, pattern)
    return (LITERAL, key) if key is not None else (SCAN, "")


#: (sequence number in policy order, rule): its effect and other fields are read from the
#: rule itself, so an entry is two references.
Entry = tuple[int, Rule]
#: Entries under one key of a bucket's dict: one entry (the common case) or a list.
Group = Entry | list[Entry]
#: The rows of one subject or role, by the shape of their path pattern: literal path ->
#: entries, head (a value's text up to its last "/") -> entries, (prefix, entry) pairs,
#: and (predicate, entry) pairs for the patterns only a regex or function can match.
Bucket = tuple[
    dict[str, Group],
    dict[str, Group],
    tuple[tuple[str, Entry], ...],
    tuple[tuple[Predicate, Entry], ...],
]
#: A member's direct roles: one role as a plain string (the common case), else a tuple.
Roles = str | tuple[str, ...]


def _always(_value: str) -> bool:
    return True


def _put(table: dict[str, Group], key: str, entry: Entry) -> None:
    found = table.get(key)
    if found is None:
        table[key] = entry
    elif found.__class__ is list:
        found.append(entry)
    else:
        table[key] = [found, entry]  # type: ignore[list-item]


class DecisionIndex:
    """Immutable compiled form of one snapshot's rows.

    Its only mutable parts are caches keyed by role names and by the patterns of the
    non-path fields (methods), which the policy bounds: nothing is ever remembered about
    a subject that is not in the policy, and no predicate is compiled per path pattern
    of the common shapes (literal, ``prefix/*``, ``prefix/:name``).
    """

    def __init__(
        self,
        plan: Plan,
        buckets: dict[str, Bucket],
        links: dict[str, Roles],
        predicates: dict[tuple[str, str], Predicate],
        closures: dict[str, tuple[str, ...]] | None = None,
        *,
        link_overlay: dict[str, Roles | tuple[()]] | None = None,
        bucket_overlay: dict[str, Bucket | None] | None = None,
        role_buckets: dict[str, tuple[Bucket, ...]] | None = None,
        check_tables: tuple[dict[str, Check], ...] | None = None,
    ) -> None:
        self.plan = plan
        #: key -> bucket, shared between indexes and never mutated once built ...
        self._buckets = buckets
        #: ... and the buckets changed since (None: gone), so a change copies this small
        #: dict, not a bucket per subject (see with_changes).
        self._bucket_overlay: dict[str, Bucket | None] = (
            bucket_overlay if bucket_overlay is not None else {}
        )
        #: member -> roles, shared between indexes and never mutated once built ...
        self._links = links
        #: ... and the members whose links changed since (``()``: no roles any more), so a
        #: change copies this small dict, not a link per account (see with_changes).
        self._link_overlay: dict[str, Roles | tuple[()]] = (
            link_overlay if link_overlay is not None else {}
        )
        #: (kind, pattern) -> predicate, for the path patterns a bucket scans.
        self._predicates = predicates
        #: Per term of ``plan.checks``: pattern -> predicate (a method has few patterns).
        self._check_tables: tuple[dict[str, Check], ...] = (
            check_tables if check_tables is not None else tuple({} for _ in plan.checks)
        )
        #: role -> the names it reaches within the levels left below a direct role.
        self._closures: dict[str, tuple[str, ...]] = closures if closures is not None else {}
        #: role -> the buckets of those names (kept while neither rows nor role links change).
        self._role_buckets: dict[str, tuple[Bucket, ...]] = (
            role_buckets if role_buckets is not None else {}
        )
        #: ``decide(request) -> (allowed, explaining rule)``, exactly as Casbin's enforce_ex;
        #: ``decide_full(sub, obj, act) -> Decision``: closures specialised for this index.
        self.decide_full: Callable[[str, str, str], Decision]
        self.decide: Callable[[tuple[str, ...]], tuple[bool, Rule | None]]
        self.decide = self._compile_decide()

    # -- building -----------------------------------------------------------------------

    @classmethod
    def build(cls, plan: Plan, rules: Iterable[Rule]) -> DecisionIndex:
        """Compile rows given in policy order."""
        shell = cls(plan, {}, {}, {})
        grouped: dict[str, list[Entry]] = {}
        links: dict[str, Roles] = {}
        admit = shell._admit
        key_field = plan.key.p if plan.key is not None else None
        links_get = links.get
        grouped_get = grouped.get
        for seq, rule in enumerate(rules):
            ptype, values = rule
            if ptype == "p":
                admit(values)
                key = values[key_field] if key_field is not None else ""
                bucket = grouped_get(key)
                if bucket is None:
                    bucket = grouped[key] = []
                bucket.append((seq, rule))
            elif ptype == "g" and len(values) >= 2:
                # _link, inlined: this loop runs once per row of a large policy.
                member, role = values[0], values[1]
                current = links_get(member)
                if current is None:
                    links[member] = role
                elif isinstance(current, str):
                    links[member] = (current, role)
                else:
                    links[member] = (*current, role)
        make = shell._make_bucket
        buckets = {k: make(v) for k, v in grouped.items()}
        return cls(plan, buckets, links, shell._predicates, check_tables=shell._check_tables)

    def with_changes(
        self, added: Iterable[tuple[Rule, int]], removed: Iterable[Rule]
    ) -> DecisionIndex:
        """Return a new index with rows added and removed; untouched buckets are shared."""
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
                self._admit(rule.values)
                touched.setdefault(self._bucket_key(rule), []).append((seq, rule))
            elif rule.ptype == "g":
                link_changes.append((rule.values[0], rule.values[1], True))
        buckets, changed = self._buckets, self._bucket_overlay
        if touched or gone:
            changed = dict(changed)
            for key in set(touched) | set(gone):
                dropped = gone.get(key, set())
                was = changed[key] if key in changed else buckets.get(key)
                entries = [e for e in _entries(was) if e[1] not in dropped]
                entries += touched.get(key, [])
                changed[key] = (
                    self._make_bucket(sorted(entries, key=lambda e: e[0])) if entries else None
                )
            if len(changed) > max(LINK_OVERLAY_MIN, len(buckets) // LINK_OVERLAY_SHARE):
                buckets = dict(buckets)  # compact: the overlay goes into a new base
                for key, bucket in changed.items():
                    if bucket is not None:
                        buckets[key] = bucket
                    else:
                        buckets.pop(key, None)
                changed = {}
        links, overlay = self._links, self._link_overlay
        if link_changes:
            overlay = dict(overlay)
            for member, role, add in link_changes:
                current = overlay[member] if member in overlay else links.get(member)
                overlay[member] = _linked(current or None, role, add) or ()
            if len(overlay) > max(LINK_OVERLAY_MIN, len(links) // LINK_OVERLAY_SHARE):
                links = dict(links)  # compact: the overlay goes into a new base
                for member, roles in overlay.items():
                    if roles:
                        links[member] = roles
                    else:
                        links.pop(member, None)
                overlay = {}
        # Closures follow links between roles only: a link of an account (an email) or of a
        # token never lies on a path from one role to another.
        roles_relinked = any(is_role(member) for member, _role, _add in link_changes)
        closures = self._closures if not roles_relinked else None
        # A role's buckets depend on its closure and on the rows of the names in it.
        role_buckets = self._role_buckets if not (roles_relinked or touched or gone) else None
        return DecisionIndex(
            self.plan,
            buckets,
            links,
            self._predicates,
            closures,
            link_overlay=overlay,
            bucket_overlay=changed,
            role_buckets=role_buckets,
            check_tables=self._check_tables,
        )

    def _bucket_key(self, rule: Rule) -> str:
        key = self.plan.key
        return rule.values[key.p] if key is not None else ""

    def _predicate(self, kind: str, pattern: str) -> Predicate:
        cache_key = (kind, pattern)
        found = self._predicates.get(cache_key)
        if found is None:
            found = self._predicates[cache_key] = compile_predicate(kind, pattern)
        return found

    def _admit(self, values: tuple[str, ...]) -> None:
        """Compile the row's non-path patterns (once per distinct pattern), so a row Casbin
        could not evaluate is found while building, never while deciding.

        :raises BrokenPattern: as compile_predicate.
        """
        for term, table in zip(self.plan.checks, self._check_tables, strict=True):
            pattern = values[term.p]
            if pattern not in table:
                table[pattern] = _check_form(term.kind, pattern)

    def _make_bucket(self, entries: Iterable[Entry]) -> Bucket:
        path = self.plan.path
        literal: dict[str, Group] = {}
        heads: dict[str, Group] = {}
        prefixes: list[tuple[str, Entry]] = []
        scan: list[tuple[Predicate, Entry]] = []
        for entry in entries:
            if path is None:
                scan.append((_always, entry))
                continue
            pattern = entry[1].values[path.p]
            shape, key = path_shape(path.kind, pattern)
            if shape == LITERAL:
                _put(literal, key, entry)
            elif shape == HEAD:
                _put(heads, key, entry)
            elif shape == PREFIX:
                prefixes.append((key, entry))
            else:
                scan.append((self._predicate(path.kind, pattern), entry))
        return (literal, heads, tuple(prefixes), tuple(scan))

    # -- subjects -----------------------------------------------------------------------

    def _roles_of(self, member: str) -> Roles | None:
        """The roles linked to a member (one name or a tuple), or None."""
        overlay = self._link_overlay
        if member in overlay:
            return overlay[member] or None
        return self._links.get(member)

    def direct_roles(self, subject: str) -> tuple[str, ...]:
        """The roles a subject is linked to directly."""
        roles = self._roles_of(subject)
        if roles is None:
            return ()
        return (roles,) if isinstance(roles, str) else roles

    def names_for(self, subject: str) -> tuple[str, ...]:
        """Return the subject and every name it reaches through g links (Casbin's limit)."""
        direct = self.direct_roles(subject)
        if not direct:
            return (subject,)
        seen = {subject: None}
        for role in direct:
            seen.update(dict.fromkeys(self._closure(role)))
        return tuple(seen)

    def _closure(self, role: str) -> tuple[str, ...]:
        """``role`` and the names it reaches in the levels left below a direct role.

        Casbin's role manager looks MAX_HIERARCHY_LEVEL levels deep, the subject being
        the first and its direct roles the second.
        """
        found = self._closures.get(role)
        if found is not None:
            return found
        seen = {role: None}
        frontier = [role]
        for _ in range(MAX_HIERARCHY_LEVEL - 2):
            nxt = []
            for current in frontier:
                for parent in self.direct_roles(current):
                    if parent not in seen:
                        seen[parent] = None
                        nxt.append(parent)
            if not nxt:
                break
            frontier = nxt
        found = self._closures[role] = tuple(seen)
        return found

    def _bucket(self, key: str) -> Bucket | None:
        """The rows of one subject or role, or None."""
        changed = self._bucket_overlay
        if key in changed:
            return changed[key]
        return self._buckets.get(key)

    def _buckets_of_role(self, role: str) -> tuple[Bucket, ...]:
        found = self._role_buckets.get(role)
        if found is None:
            get = self._bucket
            found = tuple(b for b in map(get, self._closure(role)) if b is not None)
            self._role_buckets[role] = found
        return found

    def buckets_for(self, subject: str) -> tuple[Bucket, ...]:
        """The buckets of every name the subject holds (a subject in a role cycle may
        see a bucket twice, which changes neither the effect nor the explaining row)."""
        roles = self._roles_of(subject)
        own = self._bucket(subject)
        if roles is None:
            return (own,) if own is not None else ()
        if isinstance(roles, str):
            found = self._buckets_of_role(roles)
        else:
            found = tuple(b for role in roles for b in self._buckets_of_role(role))
        return found + (own,) if own is not None else found

    # -- deciding -----------------------------------------------------------------------

    def _groups(self, request: tuple[str, ...]) -> tuple[Bucket, ...]:
        key = self.plan.key
        if key is None:
            bucket = self._bucket("")
            return (bucket,) if bucket is not None else ()
        if key.kind == "g":
            return self.buckets_for(request[key.r])
        bucket = self._bucket(request[key.r])
        return (bucket,) if bucket is not None else ()

    def _compile_decide(self) -> Callable[[tuple[str, ...]], tuple[bool, Rule | None]]:
        """Return ``decide`` specialised for this index: locals only on the hot path.

        Casbin walks the rows in policy order and stops at the first row that settles
        the effect (an allow for allow-override, a deny otherwise); that row explains
        the decision, or else the last matching row does.
        """
        plan = self.plan
        effect_name = plan.effect
        deny_override = effect_name == "deny-override"
        allow_override = effect_name == "allow-override"
        settling = ALLOW if allow_override else DENY
        path = plan.path
        path_r = path.r if path is not None else 0
        has_path = path is not None
        path_kind = path.kind if path is not None else ""
        path_p = path.p if path is not None else 0
        eft_p = plan.eft
        checks = tuple(
            (t.r, t.p, table) for t, table in zip(plan.checks, self._check_tables, strict=True)
        )
        one_check = checks[0] if len(checks) == 1 else None
        key = plan.key
        fast_subject = key is not None and key.kind == "g"
        key_r = key.r if key is not None else 0
        links_get = self._links.get
        # Members relinked since the links were last compacted: one more lookup, and only
        # while there are any.
        overlay_get = self._link_overlay.get if self._link_overlay else None
        missing = _MISSING
        base_get = self._buckets.get
        changed_get = self._bucket_overlay.get

        def merged_get(key: str) -> Bucket | None:
            found = changed_get(key, missing)
            return base_get(key) if found is missing else found

        # Buckets changed since the last compaction: one more lookup, only while any.
        buckets_get: Callable[[str], Bucket | None] = (
            merged_get if self._bucket_overlay else base_get
        )
        role_buckets_get = self._role_buckets.get
        # The closure reaches the index through a weak reference: a strong one (a bound
        # method) would put every index in a reference cycle, which only the collector
        # frees, and a production worker freezes the collector after a full load.
        index_ref = weakref.ref(self)

        def buckets_of_role(role: str) -> tuple[Bucket, ...]:
            index = index_ref()
            if index is None:  # the snapshot holding this closure keeps its index alive
                raise RuntimeError("decision index released while deciding")
            return index._buckets_of_role(role)

        def groups(request: tuple[str, ...]) -> tuple[Bucket, ...]:
            index = index_ref()
            if index is None:
                raise RuntimeError("decision index released while deciding")
            return index._groups(request)

        exact = _exact_predicate
        new = tuple.__new__
        unset: Any = _MISSING

        def along_regexes(value: str, found_groups: tuple[Bucket, ...]) -> list[Entry]:
            """As along_paths, with each pattern's own Casbin expression (a value holding a
            line break, which ``$`` and ``.`` treat specially: rare, so not fast)."""
            matched: list[Entry] = []
            for literal, heads, prefixes, scan in found_groups:
                shaped: list[Entry] = [e for e in _group_entries(literal, heads)]
                shaped += [e for _prefix, e in prefixes]
                for entry in shaped:
                    if exact(path_kind, entry[1][1][path_p])(value):
                        matched.append(entry)
                for predicate, entry in scan:
                    if predicate(value):
                        matched.append(entry)
            return matched

        def decide_full(sub: str, obj: str, act: str) -> Decision:
            request = (sub, obj, act)
            if fast_subject:
                subject = request[key_r]
                if overlay_get is None:
                    roles = links_get(subject)
                else:
                    roles = overlay_get(subject, missing)
                    if roles is missing:
                        roles = links_get(subject)
                    elif not roles:
                        roles = None
                own = buckets_get(subject)
                if roles is None:
                    found_groups: tuple[Bucket, ...] = (own,) if own is not None else ()
                else:
                    if roles.__class__ is str:
                        found_groups = role_buckets_get(roles) or buckets_of_role(roles)
                    else:
                        found_groups = tuple(b for r in roles for b in buckets_of_role(r))
                    if own is not None:
                        found_groups += (own,)
            else:
                found_groups = groups(request)
            if not has_path:
                matched = [e for bucket in found_groups for _p, e in bucket[3]]
            elif "\n" in request[path_r]:
                matched = along_regexes(request[path_r], found_groups)
            else:
                # along_paths, inlined: the entries whose path pattern matches the value.
                value = request[path_r]
                matched = []
                head: str | None = unset  # worked out for the first bucket with heads
                for literal, heads, prefixes, scan in found_groups:
                    if literal:
                        hit = literal.get(value)
                        if hit is not None:
                            if hit.__class__ is list:
                                matched += hit
                            else:
                                matched.append(hit)  # type: ignore[arg-type]
                    if heads:
                        if head is unset:
                            cut = value.rfind("/") + 1
                            # A ":name" segment takes one character or more, and no "/".
                            head = value[:cut] if 0 < cut < len(value) else None
                        hit = heads.get(head)  # type: ignore[arg-type]
                        if hit is not None:
                            if hit.__class__ is list:
                                matched += hit
                            else:
                                matched.append(hit)  # type: ignore[arg-type]
                    for prefix, entry in prefixes:
                        if value.startswith(prefix):
                            matched.append(entry)
                    for predicate, entry in scan:
                        if predicate(value):
                            matched.append(entry)
            hit_one = None  # the only matching row, the common case
            hits: list[Entry] | None = None  # every matching row, once there are two
            if one_check is not None:
                check_r, check_p, table = one_check
                checked = request[check_r]
                for entry in matched:
                    test = table[entry[1][1][check_p]]
                    if (
                        checked.startswith(test) if test.__class__ is tuple else test(checked)  # type: ignore[operator]
                    ):
                        if hit_one is None:
                            hit_one = entry
                        elif hits is None:
                            hits = [hit_one, entry]
                        else:
                            hits.append(entry)
            else:
                for entry in matched:
                    values = entry[1][1]
                    for field, at, table in checks:
                        test = table[values[at]]
                        if test.__class__ is tuple:
                            if not request[field].startswith(test):
                                break
                        elif not test(request[field]):  # type: ignore[operator]
                            break
                    else:
                        if hit_one is None:
                            hit_one = entry
                        elif hits is None:
                            hits = [hit_one, entry]
                        else:
                            hits.append(entry)
            # tuple.__new__ builds the Decision without its Python-level __new__.
            if hit_one is None:
                return new(Decision, (deny_override, NO_MATCH, sub, obj, act, None))
            if hits is None:
                rule = hit_one[1]
                if eft_p is None:
                    allowed = True
                else:
                    eft = rule[1][eft_p]
                    allowed = eft != "deny" if deny_override else eft == "allow"
                reason = ALLOW_RULE if allowed else DENY_RULE
                return new(Decision, (allowed, reason, sub, obj, act, rule))
            first = last = None
            any_allow = False
            for entry in hits:
                effect = _effect(entry[1], eft_p)
                if effect == settling and (first is None or entry[0] < first[0]):
                    first = entry
                if last is None or entry[0] > last[0]:
                    last = entry
                if effect == ALLOW:
                    any_allow = True
            if allow_override:
                allowed = first is not None
            elif deny_override:
                allowed = first is None
            else:
                allowed = first is None and any_allow
            reason = ALLOW_RULE if allowed else DENY_RULE
            return new(Decision, (allowed, reason, sub, obj, act, (first or last)[1]))  # type: ignore[index]

        def decide(request: tuple[str, ...]) -> tuple[bool, Rule | None]:
            decision = decide_full(*request)
            return decision[0], decision[5]

        self.decide_full = decide_full
        return decide


def _check_form(kind: str, pattern: str) -> Check:
    """A non-path pattern as the index tests it: the alternatives a plain regexMatch
    alternation ("GET|POST") starts with (``re.match`` anchors at the start only, and
    ``str.startswith`` takes a tuple), else its predicate."""
    if kind == "regexMatch" and _ALTERNATION.match(pattern):
        return tuple(pattern.split("|"))
    return compile_predicate(kind, pattern)


def _effect(rule: Rule, eft_p: int | None) -> int:
    """A row's effect code: ALLOW without an eft field, else by its eft value."""
    if eft_p is None:
        return ALLOW
    eft = rule.values[eft_p]
    return ALLOW if eft == "allow" else DENY if eft == "deny" else OTHER


@functools.lru_cache(maxsize=4096)
def _exact_predicate(kind: str, pattern: str) -> Predicate:
    """compile_predicate, remembered for the few values that take the regex route."""
    return compile_predicate(kind, pattern)


def _group_entries(*tables: dict[str, Group]) -> Iterator[Entry]:
    for table in tables:
        for group in table.values():
            if group.__class__ is list:
                yield from group
            else:
                yield group  # type: ignore[misc]


def _linked(current: Roles | None, role: str, add: bool) -> Roles | None:
    """A member's roles after linking (``add``) or unlinking one role."""
    roles = [] if current is None else [current] if isinstance(current, str) else list(current)
    if add:
        roles.append(role)
    elif role in roles:
        roles.remove(role)
    if not roles:
        return None
    return roles[0] if len(roles) == 1 else tuple(roles)


def _entries(bucket: Bucket | None) -> list[Entry]:
    if bucket is None:
        return []
    literal, heads, prefixes, scan = bucket
    out = list(_group_entries(literal, heads))
    out.extend(e for _prefix, e in prefixes)
    out.extend(e for _predicate, e in scan)
    return out


def compile_index(model: PolicyModel, rules: Iterable[Rule]) -> DecisionIndex:
    """Compile an index for a supported model; raise Unsupported otherwise."""
    return DecisionIndex.build(plan_for(model), rules)
