"""An immutable policy snapshot: the rules of one revision and what decides on them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field

import casbin

from authz.decision import Decision
from authz.decision import Reason
from authz.model import PolicyModel
from authz.rules import Rule


@dataclass(frozen=True)
class Snapshot:
    """The rules of one policy revision; never mutated once built."""

    revision: int
    rules: tuple[Rule, ...]
    model: PolicyModel
    ruleset: frozenset[Rule] = field(init=False)
    _enforcer: casbin.Enforcer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ruleset", frozenset(self.rules))
        object.__setattr__(self, "_enforcer", _build_enforcer(self.model, self.rules))

    def with_changes(self, revision: int, add: Iterable[Rule], remove: Iterable[Rule]) -> Snapshot:
        """Return a new snapshot with rows added and removed (this one is untouched)."""
        gone = set(remove)
        rules = [r for r in self.rules if r not in gone]
        present = set(rules)
        for r in add:
            if r not in present:
                rules.append(r)
                present.add(r)
        return Snapshot(revision, tuple(rules), self.model)

    def decide(self, sub: str, obj: str, act: str) -> Decision:
        """Decide one request against this snapshot."""
        allowed, explain = self._enforcer.enforce_ex(sub, obj, act)
        rule = Rule("p", tuple(explain)) if explain else None
        if allowed:
            reason = Reason.ALLOW_RULE if rule else Reason.NO_MATCH
        else:
            reason = Reason.DENY_RULE if rule else Reason.NO_MATCH
        return Decision(bool(allowed), reason, sub, obj, act, rule)

    def roles_for(self, subject: str) -> list[str]:
        """Return every role the subject holds, directly or through inheritance."""
        return sorted(self._enforcer.get_implicit_roles_for_user(subject))

    def inheritance_path(self, start: str, goal: str, ptype: str = "g") -> list[str] | None:
        """Return a chain of ``ptype`` links from ``start`` up to ``goal``, or None."""
        links = self._links(ptype)
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

    def _links(self, ptype: str) -> dict[str, list[str]]:
        cache = self.__dict__.setdefault("_link_cache", {})
        if ptype not in cache:
            links: dict[str, list[str]] = {}
            for r in self.rules:
                if r.ptype == ptype:
                    links.setdefault(r.values[0], []).append(r.values[1])
            cache[ptype] = links
        return cache[ptype]  # type: ignore[no-any-return]

    def members_of(self, role: str) -> list[str]:
        """Return the direct members of a role (users and roles)."""
        return sorted(r.values[0] for r in self.rules if r.ptype == "g" and r.values[1] == role)


def _build_enforcer(model: PolicyModel, rules: Iterable[Rule]) -> casbin.Enforcer:
    cmodel = model.casbin_model()
    enforcer = casbin.Enforcer(cmodel)
    for rule in rules:
        sec = "g" if rule.ptype in model.roles else "p"
        cmodel.add_policy(sec, rule.ptype, list(rule.values))
    enforcer.build_role_links()
    return enforcer
