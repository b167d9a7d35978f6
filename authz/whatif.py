"""What a policy change would do, before it is saved: who gains and who loses access to
which request, and which policy tests flip.

The requests compared are *targets*: each route of the application (given by the caller)
and each distinct path pattern of the policy, with the methods that route serves or the
rows of that pattern name. Each is decided before and after the change for every role
and for the active users the change touches. A user is listed only when no role of theirs
explains the same line, so a change to a role with ten thousand members reads as one line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field

from authz import views
from authz.errors import AuthzError
from authz.errors import UnsafePath
from authz.expectations import Expectation
from authz.expectations import Result
from authz.expectations import judge
from authz.paths import canonical_object
from authz.risks import compared_fields
from authz.rules import Rule
from authz.rules import field_names
from authz.rules import is_role
from authz.rules import is_token
from authz.rules import is_user
from authz.snapshot import Snapshot

#: Methods compared for a pattern whose rows name methods by a regular expression.
COMMON_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Lines kept; beyond these they are counted.
MAX_LINES = 200
#: Lines shown per subject and direction in a summary (the rest are counted).
PER_SUBJECT = 8
#: Active users decided one by one (members of a changed role beyond these are covered
#: by the role's own line).
MAX_USERS = 500
#: Candidate users asked about at once (whether their accounts are active).
USER_BATCH = 500
#: Path patterns compared when the policy has more: those the change names, and those of
#: the roles its role links touch.
MAX_PATTERNS = 2000
#: Decisions one comparison may make (about a second), users and patterns cut first.
MAX_DECISIONS = 200_000
_PLAIN_METHODS = re.compile(r"[A-Z]+(\|[A-Z]+)*\Z")
_ROUTE_PART = re.compile(r"<(?:([a-zA-Z_][\w]*)(?:\([^)]*\))?:)?([a-zA-Z_]\w*)>")
_NUMERIC = frozenset({"int", "float"})


@dataclass(frozen=True)
class Target:
    """A request compared before and after: how it is shown, a path it stands for, and
    the methods compared on it."""

    label: str
    path: str
    methods: tuple[str, ...]


def route_target(rule: str, methods: Iterable[str]) -> Target | None:
    """The target of an application route written as Werkzeug does (``/reports/<int:id>``):
    shown as ``/reports/:id``, decided on ``/reports/1``; None when it is not a path."""
    label = _ROUTE_PART.sub(lambda m: f":{m.group(2)}", rule)
    sample = _ROUTE_PART.sub(lambda m: "1" if m.group(1) in _NUMERIC else "x", rule)
    shown = tuple(sorted(m for m in methods if m not in ("HEAD", "OPTIONS")))
    if not shown or not _servable(sample):
        return None
    return Target(label, sample, shown)


def pattern_sample(kind: str, pattern: str) -> str | None:
    """A request path a policy path pattern accepts, for the matcher function ``kind``
    (None when it cannot tell one): ``/reports/:id`` gives ``/reports/x``."""
    if kind == "eq":
        sample = pattern
    elif kind in ("keyMatch", "keyMatch2", "keyMatch3", "keyMatch4", "keyMatch5"):
        sample = re.sub(r"\{[^/{}]+\}", "x", pattern) if kind != "keyMatch" else pattern
        if kind == "keyMatch2":
            sample = re.sub(r"(?<=/):[^/]+", "x", sample)
        sample = sample.replace("*", "x")
    else:  # regular expressions, globs, IP ranges: only a pattern without any syntax
        sample = pattern if re.fullmatch(r"[A-Za-z0-9/_.~-]*", pattern) else ""
    return sample if sample and _servable(sample) else None


def _servable(path: str) -> bool:
    try:
        canonical_object(path)
    except UnsafePath:
        return False
    return True


@dataclass(frozen=True)
class Access:
    """One line of the diff: a subject gains or loses one request."""

    gained: bool
    subject: str
    method: str
    label: str
    #: Whether the subject is a role (roles are listed before users).
    role: bool = False

    def __str__(self) -> str:
        if self.gained:
            return f"+ {self.subject} may now {self.method} {self.label}"
        return f"- {self.subject} may no longer {self.method} {self.label}"

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready mapping, with the line as text."""
        return {
            "change": "gains" if self.gained else "loses",
            "subject": self.subject,
            "method": self.method,
            "path": self.label,
            "text": str(self),
        }


@dataclass(frozen=True)
class More:
    """Lines of one subject beyond those shown: a user who loses a role loses many."""

    gained: bool
    subject: str
    count: int

    def __str__(self) -> str:
        verb = "may now" if self.gained else "may no longer"
        return f"{'+' if self.gained else '-'} {self.subject} {verb} {self.count} more request(s)"


@dataclass(frozen=True)
class Flip:
    """A policy test the change breaks, or one that it makes pass."""

    before: Result
    after: Result

    @property
    def expectation(self) -> Expectation:
        """The policy test."""
        return self.after.expectation

    @property
    def breaks(self) -> bool:
        """Whether it passed before and fails after."""
        return self.before.passed and not self.after.passed

    def __str__(self) -> str:
        verb = "breaks" if self.breaks else "now passes"
        return f"{verb}: {self.expectation}: {self.after.why()}"

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready mapping: the test, which way it flips, what decides it after."""
        return {
            "expectation": self.expectation.as_dict(),
            "change": "breaks" if self.breaks else "passes",
            "rule": self.after.rule.as_list() if self.after.rule is not None else None,
            "explain": self.after.why(),
            "text": str(self),
        }


@dataclass(frozen=True)
class WhatIf:
    """The effect of a change: access gained and lost, policy tests flipped."""

    added: tuple[Rule, ...]
    removed: tuple[Rule, ...]
    lines: tuple[Access, ...]
    flips: tuple[Flip, ...]
    #: Lines beyond those kept in ``lines``.
    more: int = 0
    #: What was left out of the comparison, one sentence each.
    limits: tuple[str, ...] = ()
    #: Why the write would be refused, or None.
    refused: str | None = None
    compared: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether the change adds or removes any row."""
        return bool(self.added or self.removed)

    def summary(self, per_subject: int = PER_SUBJECT) -> list[Access | More]:
        """The access lines, at most ``per_subject`` for one subject gaining (or losing),
        then one line counting the rest of each: a short diff to read."""
        shown: list[Access | More] = []
        counts: dict[tuple[bool, str], int] = {}
        for line in self.lines:
            key = (line.gained, line.subject)
            counts[key] = counts.get(key, 0) + 1
            if counts[key] <= per_subject:
                shown.append(line)
        for (gained, subject), count in counts.items():
            if count > per_subject:
                shown.append(More(gained, subject, count - per_subject))
        return shown

    def text(self) -> list[str]:
        """The diff as lines of text, for a terminal."""
        out = [f"{len(self.added)} row(s) added, {len(self.removed)} removed"]
        out += [f"  + {r}" for r in self.added[:20]]
        out += [f"  - {r}" for r in self.removed[:20]]
        if len(self.added) + len(self.removed) > 40:
            out.append("  ...")
        if self.flips:
            out.append("Policy tests:")
            out += [f"  {f}" for f in self.flips]
        out.append("Access:" if self.lines else "Access: no route or policy path changes")
        out += [f"  {line}" for line in self.summary()]
        if self.more:
            out.append(f"  ... and {self.more} more line(s)")
        out += [f"Note: {limit}" for limit in self.limits]
        if self.refused:
            out.append(f"Refused: {self.refused}")
        return out

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {
            "added": [r.as_list() for r in self.added],
            "removed": [r.as_list() for r in self.removed],
            "tests": [f.as_dict() for f in self.flips],
            "access": [line.as_dict() for line in self.lines],
            "more": self.more,
            "limits": list(self.limits),
            "refused": self.refused,
            "compared": self.compared,
        }


def compare(
    before: Snapshot,
    after: Snapshot,
    *,
    added: tuple[Rule, ...],
    removed: tuple[Rule, ...],
    routes: Iterable[Target] = (),
    expectations: Iterable[Expectation] = (),
    active: Callable[[Collection[str]], Collection[str]] | None = None,
    refused: str | None = None,
) -> WhatIf:
    """Compare two snapshots on the targets and subjects a change can affect.

    :param routes: the application's routes.
    :param active: given candidate users, those whose accounts are active (None: all are).
    """
    flips = tuple(_flips(before, after, expectations))
    if not (added or removed):
        return WhatIf(added, removed, (), flips, refused=refused)
    limits: list[str] = []
    roles, users = _touched(before, after, added, removed, active, limits)
    targets = unique_targets([*routes, *_patterns(before, after, added, removed, limits)])
    pairs = sum(len(t.methods) for t in targets)
    if pairs * (len(roles) + len(users)) > MAX_DECISIONS // 2:
        keep = max(0, MAX_DECISIONS // 2 // max(pairs, 1) - len(roles))
        if keep < len(users):
            limits.append(f"{len(users) - keep} of the users the change touches not compared")
            users = users[:keep]
    if pairs * len(roles) > MAX_DECISIONS // 2:
        per = max(1, len(roles))
        budget = MAX_DECISIONS // 2 // per
        kept: list[Target] = []
        for target in targets:
            if budget < len(target.methods):
                break
            kept.append(target)
            budget -= len(target.methods)
        limits.append(f"{len(targets) - len(kept)} of {len(targets)} paths not compared")
        targets = kept
    lines: list[Access] = []
    for target in targets:
        for method in target.methods:
            found = [
                Access(gain, subject, method, target.label, role=True)
                for subject in roles
                if (gain := _flipped(before, after, subject, target.path, method)) is not None
            ]
            lines += found
            explained = {(a.subject, a.gained) for a in found}
            for user in users:
                gain = _flipped(before, after, user, target.path, method)
                if gain is None:
                    continue
                held = (after if gain else before).roles_for(user)
                if any((role, gain) in explained for role in held):
                    continue  # a role of theirs has the same line
                lines.append(Access(gain, user, method, target.label))
    return WhatIf(
        added,
        removed,
        tuple(lines[:MAX_LINES]),
        flips,
        more=max(0, len(lines) - MAX_LINES),
        limits=tuple(limits),
        refused=refused,
        compared={"paths": len(targets), "roles": len(roles), "users": len(users)},
    )


def _flipped(
    before: Snapshot, after: Snapshot, subject: str, path: str, method: str
) -> bool | None:
    """True when ``subject`` gains the request, False when it loses it, None otherwise."""
    try:
        was = before.decide(subject, path, method).allowed
    except AuthzError:
        was = False  # a refused policy allows nothing
    try:
        now = after.decide(subject, path, method).allowed
    except AuthzError:
        now = False
    return None if was == now else now


def _flips(
    before: Snapshot, after: Snapshot, expectations: Iterable[Expectation]
) -> Iterable[Flip]:
    for item in expectations:
        was, now = judge(before, item), judge(after, item)
        if was.passed != now.passed:
            yield Flip(was, now)


def unique_targets(targets: Iterable[Target]) -> list[Target]:
    """One target a label: a route and a pattern written alike are compared on every
    method either names."""
    found: dict[str, Target] = {}
    for target in targets:
        known = found.get(target.label)
        if known is not None:
            methods = tuple(sorted({*known.methods, *target.methods}))
            target = Target(known.label, known.path, methods)
        found[target.label] = target
    return list(found.values())


def reached_by(
    before: Snapshot, after: Snapshot, rows: Iterable[Rule]
) -> Callable[[str], bool] | None:
    """Whether changed ``rows`` can alter a subject's decisions: a subject they name (a
    rule's subject, a link's member), or one inheriting such a subject before or after
    the change; None when the model's subjects are not matched through ``g`` links alone
    (then any subject may be).

    Asked upward, per subject (its roles), not downward from the rows (every member of a
    role a hundred thousand accounts hold): the cost is the subjects asked about.
    """
    compared = compared_fields(after.model)
    request = after.model.request
    if set(after.model.roles) != {"g"} or not request or compared.get(request[0], ("",))[0] != "g":
        return None
    rows = list(rows)
    named = {rule.values[0] for rule in rows if rule.values}
    if not any(is_role(name) for name in named):
        return named.__contains__  # users and tokens are inherited by no one
    # Rules alone leave every subject's roles as they were: ask the policy before the
    # change only (its answers are cached); links changed: ask both.
    asked = (before, after) if any(rule.is_role_link for rule in rows) else (before,)

    def held(snapshot: Snapshot, subject: str) -> list[str] | None:
        try:
            return snapshot.roles_for(subject)
        except AuthzError:  # a refused policy: its roles are unknown
            return None

    known: dict[str, bool] = {}  # tests share subjects (user, admin, anonymous...)

    def reached(subject: str) -> bool:
        found = known.get(subject)
        if found is None:
            found = subject in named or any(
                # Unknown roles (a refused policy) count as reached: judged, not skipped.
                (roles := held(snapshot, subject)) is None or not named.isdisjoint(roles)
                for snapshot in asked
            )
            known[subject] = found
        return found

    return reached


def _touched(
    before: Snapshot,
    after: Snapshot,
    added: tuple[Rule, ...],
    removed: tuple[Rule, ...],
    active: Callable[[Collection[str]], Collection[str]] | None,
    limits: list[str],
) -> tuple[list[str], list[str]]:
    """The roles and the users a change can give or take a request: the subjects its rows
    name (a rule's subject, a link's member) and every member of those that are roles,
    through inheritance, before or after it. Other subjects decide as they did.

    Users are the active ones only, at most MAX_USERS (tokens named by a row too).
    """
    if set(after.model.roles) != {"g"}:  # role types the views do not follow: every role
        return sorted(set(before.roles) | set(after.roles)), []
    named: dict[str, None] = {}
    for rule in (*added, *removed):
        named[rule.values[0] if rule.values else ""] = None
    roles: dict[str, None] = {}
    people: dict[str, None] = {}
    tokens: dict[str, None] = {}
    stack = list(named)
    listed = [views.view(before), views.view(after)]
    while stack:
        subject = stack.pop()
        if is_token(subject):
            tokens[subject] = None
        elif is_user(subject):
            people[subject] = None
        elif is_role(subject) and subject not in roles:
            roles[subject] = None
            for view in listed:
                stack.extend(link.values[0] for link in view.links_to(subject))
    # Users the rows name first, then members; active ones, asked in batches until enough
    # are found (rows may name emails that have no account yet).
    candidates = [*(u for u in people if u in named), *(u for u in people if u not in named)]
    users: list[str] = []
    for start in range(0, len(candidates), USER_BATCH):
        batch = candidates[start : start + USER_BATCH]
        live = set(active(batch)) if active is not None else set(batch)
        users += [u for u in batch if u in live]
        if len(users) > MAX_USERS:
            limits.append(
                f"more than {MAX_USERS} active users hold the roles the change touches: "
                "the first are compared, the others are covered by their roles' lines"
            )
            users = users[:MAX_USERS]
            break
    return sorted(roles), [*users, *tokens]


def _patterns(
    before: Snapshot,
    after: Snapshot,
    added: tuple[Rule, ...],
    removed: tuple[Rule, ...],
    limits: list[str],
) -> list[Target]:
    """The policy's distinct path patterns as targets, with the methods their rows name."""
    model = after.model
    compared = compared_fields(model)
    names = field_names("p", model)
    if len(model.request) < 3:
        return []
    obj = compared.get(model.request[1])
    act = compared.get(model.request[2])
    if obj is None or obj[1] not in names:
        return []
    kind, at = obj[0], names.index(obj[1])
    act_at = names.index(act[1]) if act is not None and act[1] in names else None
    methods: dict[str, set[str]] = {}

    def take(rules: Iterable[Rule]) -> None:
        for rule in rules:
            if rule.ptype != "p" or at >= len(rule.values):
                continue
            pattern = rule.values[at]
            named = methods.setdefault(pattern, set())
            value = rule.values[act_at] if act_at is not None and act_at < len(rule.values) else ""
            if _PLAIN_METHODS.match(value):
                named.update(value.split("|"))
            else:
                named.update(COMMON_METHODS)

    distinct: set[str] = set()
    for rule in before.ruleset:
        if rule.ptype == "p" and at < len(rule.values):
            distinct.add(rule.values[at])
            if len(distinct) > MAX_PATTERNS:
                break
    if len(distinct) <= MAX_PATTERNS:
        take(before.ruleset)
        take(added)
    else:
        # The patterns the change names, and those of the roles its links touch.
        take(r for r in (*added, *removed) if r.ptype == "p")
        touched = {v for r in (*added, *removed) if r.is_role_link for v in r.values[:2]}
        holders: set[str] = set()
        for name in touched:
            holders.update(before.roles_for(name))
            holders.update(after.roles_for(name))
            holders.add(name)
        for snap in (before, after):
            take(views.view(snap).rules_of(*sorted(holders)))
        limits.append(
            f"the policy has more than {MAX_PATTERNS} path patterns: only the {len(methods)} "
            "the change names (or its role links bring) are compared"
        )
    found = []
    unsampled = 0
    for pattern in sorted(methods):
        sample = pattern_sample(kind, pattern)
        if sample is not None:
            found.append(Target(pattern, sample, tuple(sorted(methods[pattern]))))
        else:
            unsampled += 1
    if unsampled:
        limits.append(
            f"{unsampled} path pattern(s) of the policy name no path that can be tried "
            f"under {kind} and are not compared (the routes are)"
        )
    return found
