"""An immutable policy snapshot: the rules of one revision and what decides on them.

Decisions come from the compiled index (authz.index) when the model allows it, and from
a Casbin enforcer otherwise: automatically, with a log line and a metric, never a wrong
answer.

Stored rows are trusted no more than written ones: a snapshot built from the database
(``Snapshot.stored``) passes every row through the write path's validation first. A row
that fails is reported (``BadRow``) and skipped where skipping can only deny; where
skipping could grant, the snapshot is refused and every decision on it raises
EngineUnavailable until the row is fixed or removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple
from typing import NoReturn
from typing import Protocol

import casbin
from casbin.effect import SUBJECT_PRIORITY_EFFECT
from casbin.effect import AllowOverrideEffector
from casbin.effect import get_effector
from casbin.persist import Adapter
from casbin.persist.adapter import _extract_tokens

from authz import metrics
from authz.decision import Decision
from authz.decision import Reason
from authz.errors import EngineUnavailable
from authz.errors import RequestTooLarge
from authz.errors import RuleError
from authz.index import DecisionIndex
from authz.index import Unsupported
from authz.index import plan_for
from authz.model import PolicyModel
from authz.patterns import MAX_VALUE
from authz.rows import Rows
from authz.rules import Rule
from authz.rules import Validator
from authz.rules import is_role

log = logging.getLogger("authz")
NO_MATCH, ALLOW_RULE, DENY_RULE = Reason.NO_MATCH, Reason.ALLOW_RULE, Reason.DENY_RULE
_new = tuple.__new__
_reported: set[str] = set()


class Decider(Protocol):
    """What a snapshot decides with."""

    kind: str

    def decide(self, request: tuple[str, str, str]) -> tuple[bool, Rule | None]: ...

    def roles_for(self, subject: str) -> list[str]: ...

    def with_changes(
        self, rows: Mapping[Rule, None], added: list[tuple[Rule, int]], removed: list[Rule]
    ) -> Decider: ...


class IndexDecider:
    """Decides with the compiled index."""

    kind = "index"

    def __init__(self, index: DecisionIndex, model: PolicyModel) -> None:
        self.index = index
        self.model = model
        self.decide_full = index.decide_full
        self.decide = index.decide  # type: ignore[method-assign,assignment]  # one call less per request

    def decide(self, request: tuple[str, str, str]) -> tuple[bool, Rule | None]:
        return self.index.decide(request)

    def roles_for(self, subject: str) -> list[str]:
        return sorted(n for n in self.index.names_for(subject) if n != subject)

    def with_changes(
        self, rows: Mapping[Rule, None], added: list[tuple[Rule, int]], removed: list[Rule]
    ) -> Decider:
        try:
            return IndexDecider(self.index.with_changes(added, removed), self.model)
        except Unsupported as e:
            return _fallback(self.model, rows, e)


class RowsAdapter(Adapter):  # type: ignore[misc]  # casbin ships no type hints
    """Casbin's adapter interface over rows in memory, so Casbin loads them itself.

    ``load_policy`` does what ``casbin.persist.load_policy_line`` does for each line of a
    policy file (a row whose type the model lacks is skipped), without joining values
    into text and splitting them again (a value may hold a comma).
    """

    def __init__(self, rows: Iterable[Rule]) -> None:
        self.rows = rows

    def load_policy(self, model: Any) -> None:
        """Append every row to its assertion, in policy order."""
        sections = model.model
        for ptype, values in self.rows:
            assertions = sections.get(ptype[:1])
            if assertions is None or ptype not in assertions:
                continue  # as load_policy_line: the model has no such type
            assertions[ptype].policy.append(list(values))


class CasbinDecider:
    """Decides with a Casbin enforcer: the reference, and the fallback.

    Built exactly as Casbin builds an enforcer from a store: ``casbin.Enforcer(model,
    adapter)`` runs Casbin's own ``load_policy`` (sorting for the priority effects, role
    links for every ``g`` type, domain and conditional role managers alike).
    """

    kind = "casbin"

    def __init__(self, model: PolicyModel, rows: Iterable[Rule]) -> None:
        self.model = model
        #: Why the index does not decide, when this is a fallback.
        self.reason: str | None = None
        self.enforcer = casbin.Enforcer(model.casbin_model(), RowsAdapter(rows))

    def decide(self, request: tuple[str, str, str]) -> tuple[bool, Rule | None]:
        metrics.count("casbin_decisions")
        allowed, explain = self.enforcer.enforce_ex(*request)
        return bool(allowed), Rule("p", tuple(explain)) if explain else None

    def roles_for(self, subject: str) -> list[str]:
        return sorted(self.enforcer.get_implicit_roles_for_user(subject))

    def with_changes(
        self, rows: Mapping[Rule, None], added: list[tuple[Rule, int]], removed: list[Rule]
    ) -> Decider:
        return CasbinDecider(self.model, rows)


class RefusedDecider:
    """Stands in for a policy that cannot be trusted: every decision raises."""

    kind = "refused"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def refuse(self, *_args: object) -> NoReturn:
        """Raise EngineUnavailable with the reason the policy was refused."""
        raise EngineUnavailable(self.reason)

    def decide(self, request: tuple[str, str, str]) -> tuple[bool, Rule | None]:
        self.refuse()

    def roles_for(self, subject: str) -> list[str]:
        self.refuse()

    def with_changes(
        self, rows: Mapping[Rule, None], added: list[tuple[Rule, int]], removed: list[Rule]
    ) -> Decider:
        return self


#: Functions that raise on some request values (an address that is not an IP, a time):
#: where Casbin raises depends on its row order, which the index does not follow.
RAISING_FUNCTIONS = frozenset({"ipMatch", "timeMatch"})


def make_decider(model: PolicyModel, rows: Mapping[Rule, None]) -> Decider:
    """Compile the index for these rows, or fall back to Casbin (logged, counted)."""
    try:
        plan = plan_for(model)
    except Unsupported as e:
        return _fallback(model, rows, e)
    raising = sorted(
        {t.kind for t in (plan.key, plan.path, *plan.checks) if t is not None} & RAISING_FUNCTIONS
    )
    if raising:
        why = (
            f"{', '.join(raising)} raises on some request values, and where Casbin raises "
            "depends on its row order"
        )
        return _fallback(model, rows, Unsupported(why))
    if not any(rule.ptype == "p" for rule in rows):
        # With no p rows Casbin evaluates the matcher once on empty values; let it.
        return CasbinDecider(model, rows)
    try:
        decider = IndexDecider(DecisionIndex.build(plan, rows), model)
    except Unsupported as e:  # a stored row the index cannot evaluate exactly
        return _fallback(model, rows, e)
    except IndexError as e:  # a row of the wrong length (stored rows are screened first)
        raise EngineUnavailable(f"a policy row does not fit the model: {e}") from e
    metrics.gauge("decider", "index")
    return decider


def _fallback(model: PolicyModel, rows: Iterable[Rule], reason: Exception) -> CasbinDecider:
    key = f"{model.text}\0{reason}"
    if key not in _reported:
        _reported.add(key)
        log.warning("decision index not used, falling back to Casbin: %s", reason)
    metrics.gauge("decider", "casbin")
    metrics.count("fallbacks")
    decider = CasbinDecider(model, rows)
    decider.reason = str(reason)
    return decider


# -- stored rows ----------------------------------------------------------------------


class BadRow(NamedTuple):
    """A stored row the write path would refuse: its database id, the row, and why."""

    id: int | None
    rule: Rule
    reason: str

    def __str__(self) -> str:
        values = ", ".join(repr(v) for v in self.rule.values)
        return f"row {self.id} ({self.rule.ptype}, {values}): {self.reason}"


def screen(
    rules: Sequence[Rule],
    ids: Sequence[int | None],
    model: PolicyModel,
    trusted: Mapping[Rule, None] | None = None,
) -> tuple[dict[Rule, None], tuple[BadRow, ...]]:
    """Validate stored rows as the write path does; return the good ones and the bad.

    :param trusted: rows already validated against this model (the previous snapshot's),
        taken as they are, so a reload validates only what is new.
    """
    good: dict[Rule, None] = {}
    bad: list[BadRow] = []
    known = trusted if trusted is not None else {}
    check = Validator(model)
    for rule, row_id in zip(rules, ids, strict=True):
        if rule in known:
            good[rule] = None
            continue
        try:
            good[check(rule)] = None
        except RuleError as e:
            bad.append(BadRow(row_id, rule, e.message if e.field is None else str(e)))
        except Exception as e:  # noqa: BLE001 - a NULL or odd value: still just a bad row
            bad.append(BadRow(row_id, rule, f"cannot be read: {e}"))
    return good, tuple(bad)


def refusal(bad_rows: Sequence[BadRow], stored: Iterable[Rule], model: PolicyModel) -> str | None:
    """Return why skipping these rows could grant access, or None when it can only deny.

    Skipping an allow row can only take access away. Skipping a deny row, a row whose
    effect cannot be read, or a role link through which a deny row applies, can grant
    it, wherever the model's effect lets a deny count.
    """
    # Each bad row as it is stored and as Casbin's own database loader would read it: the
    # adapter joins a row's columns with ", " and splits the line again, trimming each
    # token, so a type stored as "p " or a value holding ", deny" is a row of the model to
    # Casbin. Skipping it because its stored type is unknown could grant what it denies.
    known = [
        b._replace(rule=reading)
        for b in bad_rows
        for reading in dict.fromkeys((b.rule, *_casbin_reading(b.rule, model)))
        if model.arity(reading.ptype) is not None
    ]
    if not known:
        return None  # rows of types the model lacks: Casbin's loader skips them too
    try:
        deny_counts = not isinstance(get_effector(model.effect), AllowOverrideEffector)
    except RuntimeError:
        deny_counts = True  # an effect Casbin does not know: assume the worst
    if not deny_counts:
        return None
    stored = [*stored, *(b.rule for b in known)]
    deny_values: set[str] | None = None
    links: dict[str, dict[str, list[str]]] = {}
    for bad in known:
        ptype, values = bad.rule
        if ptype in model.policies:
            if _may_deny(bad.rule, model):
                return f"{bad}; skipping it could grant what it denies"
            continue
        if len(values) < 2:
            continue  # links nobody to anything
        if model.effect == SUBJECT_PRIORITY_EFFECT:
            return f"{bad}; under subject priority a role link orders every row"
        if deny_values is None:
            deny_values = {
                str(v)
                for r in stored
                if r.ptype in model.policies and _may_deny(r, model)
                for v in r.values
            }
        if ptype not in links:
            links[ptype] = {}
            for r in stored:
                if r.ptype == ptype and len(r.values) >= 2:
                    links[ptype].setdefault(str(r.values[0]), []).append(str(r.values[1]))
        # Every value after the member may name a role (a domain value reaches nothing).
        reached = set().union(*(_reach(str(v), links[ptype]) for v in values[1:]))
        carried = sorted(reached & deny_values)
        if carried:
            return (
                f"{bad}; deny rows apply through it (to {', '.join(carried[:3])}),"
                " so skipping it could grant what they deny"
            )
    return None


def _casbin_reading(rule: Rule, model: PolicyModel) -> tuple[Rule, ...]:
    """The full row of the model Casbin's database adapter would load for this stored row,
    if it reads one (a reading of the wrong length is the stored row's problem)."""
    line = ", ".join([str(rule.ptype), *(str(v) for v in rule.values if v is not None)])
    try:
        tokens = _extract_tokens(line)
    except IndexError:  # an unbalanced ")": Casbin's loader fails on the whole table
        return ()
    if not tokens or model.arity(tokens[0]) != len(tokens) - 1:
        return ()
    return (Rule(tokens[0], tuple(tokens[1:])),)


def _may_deny(rule: Rule, model: PolicyModel) -> bool:
    fields = model.policies.get(rule.ptype, ())
    if "eft" not in fields:
        return False  # rows without an effect all allow
    at = fields.index("eft")
    eft = rule.values[at] if at < len(rule.values) else None
    return eft != "allow" or "deny" in rule.values


def _reach(start: str, links: Mapping[str, list[str]]) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for parent in links.get(stack.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _role_names(rule: Rule) -> tuple[str, ...]:
    """The role names a row mentions: a g row's role (and its member when that is a role),
    a p row's subject when that is a role."""
    values = rule.values
    if not values:
        return ()
    if rule.ptype == "g" and len(values) >= 2:
        return (values[1], values[0]) if is_role(values[0]) else (values[1],)
    return (values[0],) if is_role(values[0]) else ()


def _deciding(decider: Decider) -> Callable[[str, str, str], Decision]:
    """``decide(sub, obj, act) -> Decision`` through a decider that has no closure of its own."""

    def decide(sub: str, obj: str, act: str) -> Decision:
        allowed, rule = decider.decide((sub, obj, act))
        # tuple.__new__ skips the named tuple's Python-level __new__: this runs per request.
        if rule is None:
            return _new(Decision, (allowed, NO_MATCH, sub, obj, act, None))
        return _new(Decision, (allowed, ALLOW_RULE if allowed else DENY_RULE, sub, obj, act, rule))

    return decide


class Snapshot:
    """The rules of one policy revision; never mutated once built."""

    __slots__ = (
        "revision",
        "model",
        "_rows",
        "_next_seq",
        "decider",
        "bad_rows",
        "refused",
        "_rules",
        "_links",
        "_ids",
        "_roles",
        "fast",
    )

    def __init__(
        self,
        revision: int,
        model: PolicyModel,
        rows: Rows | dict[Rule, None],
        next_seq: int,
        decider: Decider | None = None,
        bad_rows: tuple[BadRow, ...] = (),
    ) -> None:
        self.revision = revision
        self.model = model
        self._rows = rows if isinstance(rows, Rows) else Rows(rows)
        self._next_seq = next_seq
        #: Stored rows that failed validation, skipped (or the reason for ``refused``).
        self.bad_rows = bad_rows
        #: Why this policy cannot be trusted to decide, or None; decisions then raise.
        self.refused: str | None = None
        if bad_rows:
            self.refused = refusal(bad_rows, (*rows, *(b.rule for b in bad_rows)), model)
        if self.refused is not None:
            decider = RefusedDecider(f"the stored policy is refused: {self.refused}")
        self.decider = decider if decider is not None else make_decider(model, rows)
        #: ``fast(sub, obj, act) -> Decision``: the index's own closure when compiled.
        # Never a bound method of this snapshot: that would be a reference cycle, freed only
        # by the collector (which a production worker freezes after a full load).
        self.fast = getattr(self.decider, "decide_full", None) or _deciding(self.decider)
        self._rules: tuple[Rule, ...] | None = None
        self._links: dict[str, dict[str, list[str]]] = {}
        self._ids: dict[str, Rule] | None = None
        #: role name -> how many rows name it (computed on first use, then carried along).
        self._roles: dict[str, int] | None = None

    @classmethod
    def of(cls, revision: int, rules: Iterable[Rule], model: PolicyModel) -> Snapshot:
        """Build a snapshot from rows in policy order (rows of unknown types skipped)."""
        rows = dict.fromkeys(rules)
        unknown = [r for r in rows if model.arity(r.ptype) is None]
        for rule in unknown:
            log.warning("policy row skipped: the model has no type %r: %s", rule.ptype, rule)
            del rows[rule]
        return cls(revision, model, rows, len(rows))

    @classmethod
    def stored(
        cls,
        revision: int,
        rules: Sequence[Rule],
        ids: Sequence[int | None],
        model: PolicyModel,
        *,
        trusted: Mapping[Rule, None] | None = None,
    ) -> Snapshot:
        """Build a snapshot from stored rows, each validated as the write path does.

        Bad rows are logged with their database id and kept on ``bad_rows``; the
        snapshot is ``refused`` when skipping them could grant access.
        """
        rows, bad = screen(rules, ids, model, trusted)
        for row in bad:
            log.error("stored policy row not used: %s", row)
        snapshot = cls(revision, model, rows, len(rows), bad_rows=bad)
        if snapshot.refused is not None:
            log.error("policy revision %d refused: %s", revision, snapshot.refused)
        return snapshot

    @property
    def decider_reason(self) -> str | None:
        """Why the compiled index does not decide this snapshot, or None when it does."""
        if self.refused is not None:
            return f"the stored policy is refused: {self.refused}"
        return getattr(self.decider, "reason", None)

    @property
    def stored_rows(self) -> Mapping[Rule, None]:
        """Every row as stored, bad ones included: what a change may remove."""
        if not self.bad_rows:
            return self._rows
        return {**self._rows, **dict.fromkeys(b.rule for b in self.bad_rows)}

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every row, in policy order."""
        if self._rules is None:
            self._rules = tuple(self._rows)
        return self._rules

    @property
    def ruleset(self) -> Mapping[Rule, None]:
        """The rows, for membership tests."""
        return self._rows

    @property
    def kind(self) -> str:
        """Which decider serves this snapshot: "index" or "casbin"."""
        return self.decider.kind

    def with_changes(self, revision: int, add: Iterable[Rule], remove: Iterable[Rule]) -> Snapshot:
        """Return a new snapshot with rows added and removed (this one is untouched).

        The rows are shared with this snapshot (authz.rows): the cost is the change's.
        """
        current = self._rows
        remove = dict.fromkeys(remove)
        removed = [r for r in remove if r in current]
        gone = set(removed)
        bad_rows = tuple(b for b in self.bad_rows if b.rule not in remove)
        added: list[tuple[Rule, int]] = []
        fresh: set[Rule] = set()
        seq = self._next_seq
        for rule in add:
            if (rule not in current or rule in gone) and rule not in fresh:
                fresh.add(rule)
                added.append((rule, seq))
                seq += 1
        rows = current.changed([r for r, _ in added], removed)
        if self.decider.kind != "index" or not any(r.ptype == "p" for r in rows):
            decider = None  # built from scratch by the new snapshot
        else:
            decider = self.decider.with_changes(rows, added, removed)
        after = Snapshot(revision, self.model, rows, seq, decider, bad_rows)
        if self._roles is not None:
            roles = dict(self._roles)
            for rule in removed:
                for name in _role_names(rule):
                    roles[name] -= 1
                    if not roles[name]:
                        del roles[name]
            for rule, _seq in added:
                for name in _role_names(rule):
                    roles[name] = roles.get(name, 0) + 1
            after._roles = roles
        return after

    @property
    def roles(self) -> list[str]:
        """Every role the rows name (as a role, a member that is a role, a rule's subject),
        sorted. Counted once per policy, then kept up to date change by change."""
        return sorted(self._names())

    def has_role(self, name: str) -> bool:
        """Whether any row names ``name`` as a role (see :attr:`roles`)."""
        return name in self._names()

    def _names(self) -> dict[str, int]:
        if self._roles is None:
            counts: dict[str, int] = {}
            for rule in self._rows:
                for name in _role_names(rule):
                    counts[name] = counts.get(name, 0) + 1
            self._roles = counts
        return self._roles

    def decide(self, sub: str, obj: str, act: str) -> Decision:
        """Decide one request against this snapshot (values capped as in PolicyEngine.decide)."""
        if len(obj) > MAX_VALUE or len(act) > MAX_VALUE or len(sub) > MAX_VALUE:
            raise RequestTooLarge(f"a request value is longer than {MAX_VALUE} characters")
        return self.fast(sub, obj, act)

    def roles_for(self, subject: str) -> list[str]:
        """Return every role the subject holds, directly or through inheritance."""
        return self.decider.roles_for(subject)

    def inheritance_path(self, start: str, goal: str, ptype: str = "g") -> list[str] | None:
        """Return a chain of ``ptype`` links from ``start`` up to ``goal``, or None."""
        links = self._link_map(ptype)
        seen = {start}
        stack = [(start, [start])]
        while stack:
            name, path = stack.pop()
            if name == goal:
                return path
            for parent in links.get(name, ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append((parent, [*path, parent]))
        return None

    def _link_map(self, ptype: str) -> dict[str, list[str]]:
        if ptype not in self._links:
            links: dict[str, list[str]] = {}
            for r in self._rows:
                if r.ptype == ptype:
                    links.setdefault(r.values[0], []).append(r.values[1])
            self._links[ptype] = links
        return self._links[ptype]

    def find(self, rule_id: str) -> Rule | None:
        """The row whose ``Rule.id`` this is, or None (ids hashed once per snapshot)."""
        if self._ids is None:
            self._ids = {rule.id: rule for rule in self._rows}
        return self._ids.get(rule_id)

    def direct_roles(self, subject: str, ptype: str = "g") -> list[str]:
        """The roles a subject is linked to by its own ``ptype`` rows."""
        return sorted(self._link_map(ptype).get(subject, ()))

    def members_of(self, role: str) -> list[str]:
        """Return the direct members of a role (users and roles)."""
        return sorted(r.values[0] for r in self._rows if r.ptype == "g" and r.values[1] == role)

    # -- read views (authz/views.py): added for the admin pages and the API ------------------

    def layers(self) -> tuple[Mapping[Rule, None], tuple[Rule, ...], frozenset[Rule]]:
        """The rows as a base shared with the snapshots derived from it, the rows added
        since the base (in order) and the base rows removed since.

        The rows in policy order are the base's not removed, then the added ones: what
        authz.views indexes once per base and corrects by the (small) rest.
        """
        rows = self._rows
        base = getattr(rows, "_base", None)
        if base is None:
            return rows, (), frozenset()
        return base, tuple(getattr(rows, "_added", ())), frozenset(getattr(rows, "_removed", ()))
