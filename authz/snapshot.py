"""An immutable policy snapshot: the rules of one revision and what decides on them.

Decisions come from the compiled index (authz.index) when the model allows it, and from
a Casbin enforcer otherwise: automatically, with a log line and a metric, never a wrong
answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Protocol

import casbin

from authz import metrics
from authz.decision import Decision
from authz.decision import Reason
from authz.errors import EngineUnavailable
from authz.errors import RequestTooLarge
from authz.index import DecisionIndex
from authz.index import Unsupported
from authz.index import plan_for
from authz.model import PolicyModel
from authz.patterns import MAX_VALUE
from authz.rules import Rule

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


class CasbinDecider:
    """Decides with a Casbin enforcer: the reference, and the fallback."""

    kind = "casbin"

    def __init__(self, model: PolicyModel, rows: Iterable[Rule]) -> None:
        self.model = model
        cmodel = model.casbin_model()
        self.enforcer = casbin.Enforcer(cmodel)
        for rule in rows:
            sec = "g" if rule.ptype in model.roles else "p"
            cmodel.add_policy(sec, rule.ptype, list(rule.values))
        # As Casbin's own load_policy does: priority models depend on this order.
        cmodel.sort_policies_by_subject_hierarchy()
        cmodel.sort_policies_by_priority()
        self.enforcer.build_role_links()

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


def make_decider(model: PolicyModel, rows: Mapping[Rule, None]) -> Decider:
    """Compile the index for these rows, or fall back to Casbin (logged, counted)."""
    try:
        plan = plan_for(model)
    except Unsupported as e:
        return _fallback(model, rows, e)
    if not any(rule.ptype == "p" for rule in rows):
        # With no p rows Casbin evaluates the matcher once on empty values; let it.
        return CasbinDecider(model, rows)
    try:
        decider = IndexDecider(DecisionIndex.build(plan, rows), model)
    except Unsupported as e:  # a stored row the index cannot evaluate exactly
        return _fallback(model, rows, e)
    except IndexError as e:  # a stored row of the wrong length
        raise EngineUnavailable(f"a stored policy row does not fit the model: {e}") from e
    metrics.gauge("decider", "index")
    return decider


def _fallback(model: PolicyModel, rows: Iterable[Rule], reason: Exception) -> CasbinDecider:
    key = f"{model.text}\0{reason}"
    if key not in _reported:
        _reported.add(key)
        log.warning("decision index not used, falling back to Casbin: %s", reason)
    metrics.gauge("decider", "casbin")
    metrics.count("fallbacks")
    return CasbinDecider(model, rows)


class Snapshot:
    """The rules of one policy revision; never mutated once built."""

    __slots__ = (
        "revision",
        "model",
        "_rows",
        "_next_seq",
        "decider",
        "_rules",
        "_links",
        "_ids",
        "fast",
    )

    def __init__(
        self,
        revision: int,
        model: PolicyModel,
        rows: dict[Rule, None],
        next_seq: int,
        decider: Decider | None = None,
    ) -> None:
        self.revision = revision
        self.model = model
        self._rows = rows
        self._next_seq = next_seq
        self.decider = decider if decider is not None else make_decider(model, rows)
        #: ``fast(sub, obj, act) -> Decision``: the index's own closure when compiled.
        self.fast = getattr(self.decider, "decide_full", None) or self._decide
        self._rules: tuple[Rule, ...] | None = None
        self._links: dict[str, dict[str, list[str]]] = {}
        self._ids: dict[str, Rule] | None = None

    @classmethod
    def of(cls, revision: int, rules: Iterable[Rule], model: PolicyModel) -> Snapshot:
        """Build a snapshot from rows in policy order."""
        rows = dict.fromkeys(rules)
        return cls(revision, model, rows, len(rows))

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
        """Return a new snapshot with rows added and removed (this one is untouched)."""
        rows = dict(self._rows)
        removed = [r for r in dict.fromkeys(remove) if r in rows]
        for r in removed:
            del rows[r]
        added: list[tuple[Rule, int]] = []
        seq = self._next_seq
        for rule in add:
            if rule not in rows:
                rows[rule] = None
                added.append((rule, seq))
                seq += 1
        if not any(r.ptype == "p" for r in rows) or self.decider.kind != "index":
            decider = make_decider(self.model, rows)
        else:
            decider = self.decider.with_changes(rows, added, removed)
        return Snapshot(revision, self.model, rows, seq, decider)

    def decide(self, sub: str, obj: str, act: str) -> Decision:
        """Decide one request against this snapshot (values capped as in PolicyEngine.decide)."""
        if len(obj) > MAX_VALUE or len(act) > MAX_VALUE or len(sub) > MAX_VALUE:
            raise RequestTooLarge(f"a request value is longer than {MAX_VALUE} characters")
        return self.fast(sub, obj, act)

    def _decide(self, sub: str, obj: str, act: str) -> Decision:
        allowed, rule = self.decider.decide((sub, obj, act))
        # tuple.__new__ skips the named tuple's Python-level __new__: this runs per request.
        if rule is None:
            return _new(Decision, (allowed, NO_MATCH, sub, obj, act, None))
        return _new(Decision, (allowed, ALLOW_RULE if allowed else DENY_RULE, sub, obj, act, rule))

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
