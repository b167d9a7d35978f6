"""The one policy-editing layer behind the policy editor, the JSON API and the CLI.

Each entry point parses its input, calls one function here and renders the outcome;
none of them finds rows, checks duplicates, parses audit filters or translates engine
errors on its own. Every write names who makes it (:class:`Who`) and goes through the
engine's one write path.

Edits are checked per row, not per policy: a rule is named by its id (derived from its
content), so an edit or a removal applies as long as that row is still there, whatever
else changed meanwhile. When it is gone, :class:`Conflict` carries what the row became
(from the audit log) so the editor can show both versions and keep what the admin typed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app

from authz import ANONYMOUS
from authz import Applied
from authz import AuditEntry
from authz import AuthzError
from authz import Change
from authz import Decision
from authz import EngineUnavailable
from authz import LockoutRefused
from authz import NotFound
from authz import Rule
from authz import RuleError
from authz import StaleRevision
from authz import views
from authz.errors import database_reason
from authz.expectations import ExpectationsBroken
from authz.index import Unsupported
from authz.index import compile_predicate
from authz.paths import canonical_action
from authz.paths import canonical_object
from authz.risks import compared_fields
from authz.rules import field_names
from authz.rules import is_role
from authz.rules import is_token
from authz.snapshot import Snapshot
from authz.store import DATABASE_ERRORS
from service import params
from service import users

#: Row types the editor names, and what it calls them in messages.
KINDS = {"p": "rule", "g": "role assignment"}


@dataclass(frozen=True)
class Who:
    """Who makes a change and through which surface (``web``, ``api`` or ``cli``)."""

    actor: str
    source: str


# -- outcomes that are not engine errors ------------------------------------------------


class EditError(Exception):
    """A change the editing layer refuses before the engine sees it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Missing(EditError):
    """No row (of the expected kind) has this id, and none was changed since the caller looked."""


class Duplicate(EditError):
    """The policy already has the row being added."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(f"the policy already has [{rule}]", field="subject")
        self.rule = rule


class Conflict(EditError):
    """The row being edited or removed was changed or removed since the caller read it.

    ``current`` is the row it became (None when it was removed), ``entry`` the audit
    entry of that change, ``yours`` the row the caller asked for (None for a removal).
    """

    def __init__(
        self, old: Rule, yours: Rule | None, current: Rule | None, entry: AuditEntry | None
    ) -> None:
        kind = KINDS.get(old.ptype, "row")
        who = f" by {entry.actor} (revision {entry.revision})" if entry is not None else ""
        if current is not None:
            message = f"this {kind} was changed{who} to [{current}] since you opened it"
        else:
            message = f"this {kind} was removed{who} since you opened it"
        super().__init__(message)
        self.old = old
        self.yours = yours
        self.current = current
        self.entry = entry


# -- one table from outcomes to HTTP, one to exit codes ---------------------------------

#: (status, title, reason) per kind of outcome; the first matching class wins.
HTTP_OUTCOMES: tuple[tuple[type[Exception], int, str, str], ...] = (
    (Missing, 404, "Not found", "not-found"),
    (NotFound, 404, "Not found", "not-found"),
    (Duplicate, 409, "Conflict", "duplicate"),
    (Conflict, 409, "Conflict", "conflict"),
    (StaleRevision, 409, "Stale revision", "stale-revision"),
    (LockoutRefused, 409, "Refused by the lockout guard", "lockout"),
    (ExpectationsBroken, 409, "Refused by policy tests", "policy-tests"),
    (EngineUnavailable, 503, "Service unavailable", "unavailable"),
    (RuleError, 400, "Invalid request", "invalid"),
    (params.BadParam, 400, "Invalid request", "invalid"),
    (params.Invalid, 400, "Invalid request", "invalid"),
    (users.AccountError, 400, "Invalid request", "invalid"),
    (EditError, 400, "Invalid request", "invalid"),
    (AuthzError, 400, "Invalid request", "invalid"),
)

#: Exit statuses of the command line: 1 refused or invalid, 3 the service cannot decide.
EXIT_INVALID, EXIT_UNAVAILABLE = 1, 3


def http_outcome(error: Exception) -> tuple[int, str, str]:
    """Return the HTTP status, title and reason for an outcome (500 for anything unknown)."""
    for kind, status, title, reason in HTTP_OUTCOMES:
        if isinstance(error, kind):
            return status, title, reason
    return 500, "Internal server error", "internal"


def exit_code(error: Exception) -> int:
    """Return the command line's exit status for an outcome."""
    return EXIT_UNAVAILABLE if http_outcome(error)[0] == 503 else EXIT_INVALID


# -- reading ----------------------------------------------------------------------------


def snapshot() -> Snapshot:
    """The current snapshot (EngineUnavailable when none is loaded)."""
    return users.engine().snapshot


def view() -> views.View:
    """The read view of the current snapshot: its rows indexed for listing."""
    return views.view(snapshot())


def find(rule_id: str, ptype: str | None = None, *, near: str = "") -> Rule:
    """Return the row with this id (of type ``ptype`` when given), or raise Missing.

    :param near: the subject the row is believed to name (a hint: it is found faster).
    """
    rule = view().find(rule_id, near)
    if rule is None or (ptype is not None and rule.ptype != ptype):
        kind = KINDS.get(ptype or "", "row")
        raise Missing(f"no {kind} with id {rule_id!r}")
    return rule


def validate(rule: Rule) -> Rule:
    """Return a row validated against the model (RuleError names the bad field)."""
    return users.engine().validate([rule])[0]


def field_errors(rule: Rule) -> dict[str, str]:
    """Every invalid value of a row at once, by model field name (empty when it is valid).

    The engine names the first bad field; each one found is replaced by the value of a
    valid stored row of the same type, and the row checked again, so a form can show
    every field's error together.
    """
    engine = users.engine()
    names = field_names(rule.ptype, engine.model)
    if rule.ptype in ("p", "g"):
        first = view().page(rule.ptype, 0, 1)
        sample = first[0] if first else None
    else:  # read lazily: the first row of the type ends the search
        sample = next((r for r in snapshot().ruleset if r.ptype == rule.ptype), None)
    values = list(rule.values)
    found: dict[str, str] = {}
    for _ in range(len(names) + 1):
        try:
            engine.validate([Rule(rule.ptype, tuple(values))])
        except RuleError as e:
            if e.field is None or e.field in found or e.field not in names:
                found.setdefault(e.field or "", e.message)
                break
            found[e.field] = e.message
            if sample is None or len(sample.values) != len(values):
                break
            at = names.index(e.field)
            values[at] = sample.values[at]
        else:
            break
    return found


def warnings(rule: Rule) -> list[str]:
    """The risks of a row (accepted, but worth a second look)."""
    return users.rule_warnings(rule)


def would_lock_out(subject: str, change: Change) -> bool:
    """Whether ``change`` takes away ``subject``'s own access to the policy editor."""
    path = current_app.config["AUTHZ"].editor_path
    current = snapshot()
    if not current.decide(subject, path, "GET").allowed:
        return False
    after = current.with_changes(current.revision + 1, change.add, change.remove)
    return not after.decide(subject, path, "GET").allowed


@dataclass(frozen=True)
class Tried:
    """A request decided as the middleware would decide it.

    ``as_subject`` is the subject it was decided as, when not the one named (a
    deactivated account is ``anonymous``, an unverified one the default role, a revoked
    or expired token ``anonymous``).
    """

    decision: Decision
    subject: str
    as_subject: str | None = None

    @property
    def note(self) -> str:
        """One sentence on why another subject decided, or empty."""
        if self.as_subject is None:
            return ""
        if is_token(self.subject):
            why = "is revoked or expired"
        elif self.as_subject == ANONYMOUS:
            why = "is deactivated"
        else:
            why = "has not verified its email"
        return f"{self.subject} {why}; its requests are decided as {self.as_subject}"


def try_request(subject: str, path: str, method: str) -> Tried:
    """Decide a request as the middleware would (the editor's and the CLI's "try").

    The subject must be in its one spelling and the path one the router would serve
    unchanged (BadParam and UnsafePath otherwise); the engine fails closed
    (EngineUnavailable) when it cannot decide.
    """
    named = params.subject(subject)
    obj, act = canonical_object(path), canonical_action(method)
    as_subject = users.decided_as([named]).get(named)
    decision = users.engine().decide(as_subject or named, obj, act)
    return Tried(decision, named, as_subject)


# -- listings: one page of rows, from the snapshot's indexes ----------------------------


@dataclass(frozen=True)
class Listing:
    """One page of rows and how many rows the whole listing has."""

    items: list[Rule]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        """How many pages the listing has (at least one, even when empty)."""
        return max(1, -(-self.total // self.per_page))


def _page(rows: list[Rule], page: int, per_page: int, clamp: bool) -> Listing:
    if clamp:
        page = min(max(1, page), max(1, -(-len(rows) // per_page)))
    start = (page - 1) * per_page
    return Listing(rows[start : start + per_page], len(rows), page, per_page)


def shown(listing: Listing) -> Listing:
    """A listing about to be shown: its rows' ids are kept, as the next request is likely
    to name one of them."""
    view().base.remember(listing.items)
    return listing


def effect_at() -> int | None:
    """Where a rule's effect is among its values (None: the model's rules all allow)."""
    names = field_names("p", users.engine().model)
    return names.index("eft") if "eft" in names else None


def list_rules(
    *,
    subject: str = "",
    q: str = "",
    effect: str = "",
    page: int = 1,
    per_page: int = params.DEFAULT_PER_PAGE,
    clamp: bool = False,
) -> Listing:
    """A page of the p rows, in policy order, filtered by subject, effect and a
    case-insensitive substring of any value.

    :param clamp: a page past the last is the last one (the editor); otherwise empty.

    Neither the first nor the last page reads the rows: the subject comes from an
    index, the page from the snapshot's listing, and a search runs over one text.
    """
    current = view()
    q = q.lower()
    at = effect_at()

    def effect_of(rule: Rule) -> str:
        return rule.values[at] if at is not None and at < len(rule.values) else "allow"

    if subject or (q and effect):
        rows = current.rules_of(subject) if subject else current.all_rules()
        if effect:
            rows = [r for r in rows if effect_of(r) == effect]
        if q:
            rows = [r for r in rows if any(q in v.lower() for v in r.values)]
        return _page(rows, page, per_page, clamp)
    if effect:
        if at is None:  # rows without an effect all allow
            return (
                list_rules(page=page, per_page=per_page, clamp=clamp)
                if effect == "allow"
                else _page([], page, per_page, clamp)
            )
        total, _ = current.with_effect(at, effect, 0, 0)
        if clamp:
            page = min(max(1, page), max(1, -(-total // per_page)))
        _, items = current.with_effect(at, effect, (page - 1) * per_page, per_page)
        return Listing(items, total, page, per_page)
    if q:
        total, _ = current.search(q, 0, 0)  # counted once per snapshot and search
        if clamp:
            page = min(max(1, page), max(1, -(-total // per_page)))
        _, items = current.search(q, (page - 1) * per_page, per_page)
        return Listing(items, total, page, per_page)
    total = current.count("p")
    if clamp:
        page = min(max(1, page), max(1, -(-total // per_page)))
    return Listing(current.page("p", (page - 1) * per_page, per_page), total, page, per_page)


def list_links(
    *, member: str = "", role: str = "", page: int = 1, per_page: int = params.DEFAULT_PER_PAGE
) -> Listing:
    """A page of the g rows (role assignments), in policy order, filtered by member and role."""
    current = view()
    if member or role:
        rows = current.links_of(member) if member else current.links_to(role)
        if member and role:
            rows = [r for r in rows if r.values[1] == role]
        return _page(rows, page, per_page, False)
    total = current.count("g")
    return Listing(current.page("g", (page - 1) * per_page, per_page), total, page, per_page)


def members_of(role: str) -> list[str]:
    """The direct members of a role (accounts, roles and tokens), sorted."""
    return sorted(r.values[0] for r in view().links_to(role))


# -- who can reach a path ---------------------------------------------------------------


class Reach:
    """Who may reach a path, found through the snapshot's indexes.

    Candidates only: the subjects of the rules whose path pattern accepts the path, and
    the roles and members holding them. Every candidate is then decided by the caller as
    the middleware would, so a deny row still wins. For a model whose subject is not
    matched by role links or equality (or a snapshot Casbin decides), every subject is a
    candidate.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.view = views.view(snapshot)
        model = snapshot.model
        compared = compared_fields(model)
        names = field_names("p", model)
        sub, obj = model.request[0], model.request[1]
        path_term = compared.get(obj)
        sub_term = compared.get(sub)
        #: (function, value index) of the path pattern, when the matcher names one.
        self.path: tuple[str, int] | None = None
        if path_term is not None and path_term[1] in names:
            self.path = (path_term[0], names.index(path_term[1]))
        #: The value index of the subject, when candidates can be found from it.
        self.subject: int | None = None
        if (
            self.path is not None
            and snapshot.kind == "index"
            and sub_term is not None
            and sub_term[0] in ("g", "eq")
            and sub_term[1] in names
        ):
            self.subject = names.index(sub_term[1])
        self._predicates: dict[str, Callable[[str], bool]] = {}

    @classmethod
    def of(cls, snapshot: Snapshot) -> Reach:
        """The reach of a snapshot."""
        return cls(snapshot)

    def _match(self, value: str, pattern: str) -> bool:
        assert self.path is not None
        predicate = self._predicates.get(pattern)
        if predicate is None:
            try:
                predicate = compile_predicate(self.path[0], pattern)
            except (AuthzError, Unsupported):  # a stored pattern the engine cannot evaluate
                predicate = _never
            self._predicates[pattern] = predicate
        return predicate(value)

    def matching(self, path: str) -> list[Rule]:
        """The rules whose path pattern accepts ``path`` (any method, any subject)."""
        if self.path is None:
            return []
        kind, at = self.path
        return self.view.rules_matching(kind, at, path, self._match)

    def candidate_roles(self, path: str, roles: list[str]) -> list[str]:
        """The roles of ``roles`` that may reach ``path``: those some matching rule names,
        and every role inheriting one of them (in the order of ``roles``)."""
        if self.subject is None:
            return roles
        found: set[str] = set()
        stack = [r.values[self.subject] for r in self.matching(path)]
        while stack:
            name = stack.pop()
            if name in found:
                continue
            found.add(name)
            stack.extend(link.values[0] for link in self.view.links_to(name))
        return [r for r in roles if r in found]

    def candidates(self, path: str, allowed_roles: list[str]) -> list[str] | None:
        """The subjects that may reach ``path``: those the matching rules name, and the
        direct members of the roles allowed (None: every subject is a candidate)."""
        if self.subject is None:
            return None
        found = dict.fromkeys(r.values[self.subject] for r in self.matching(path))
        for role in allowed_roles:
            found.update(dict.fromkeys(link.values[0] for link in self.view.links_to(role)))
        return list(found)

    def unmatched(self, samples: list[str], limit: int) -> tuple[list[Rule], int]:
        """The first ``limit`` rules (policy order) whose path pattern matches none of the
        ``samples``, and how many rules match none (a pattern the engine cannot evaluate
        is never listed)."""
        if self.path is None:
            return [], 0
        matched: set[Rule] = set()
        for sample in samples:
            matched.update(self.matching(sample))
        total = self.view.count("p") - len(matched)
        shown: list[Rule] = []
        at = self.path[1]
        for rule in self.view.all_rules_iter():
            if len(shown) >= limit:
                break
            if rule in matched or at >= len(rule.values):
                continue
            try:
                compile_predicate(self.path[0], rule.values[at])
            except (AuthzError, Unsupported):
                total -= 1
                continue
            shown.append(rule)
        return shown, total


def _never(value: str) -> bool:
    return False


# -- rules and role assignments ---------------------------------------------------------


def _apply(
    change: Change, who: Who, action: str, *, detail: str = "", force: bool, strict: bool = True
) -> Applied:
    """Apply one edit through the engine's write path, as ``who``."""
    return users.engine().apply(
        change,
        actor=who.actor,
        source=who.source,
        action=action,
        detail=detail,
        strict=strict,
        force=force,
    )


def add_change(rule: Rule) -> tuple[Change, str, str]:
    """The change that adds one row, its audit action and detail; Duplicate when the
    policy has the row already."""
    new = validate(rule)
    if new in snapshot().ruleset:
        raise Duplicate(new)
    action = "rule.add" if new.ptype == "p" else "role.assign"
    detail = new.values[0] if new.ptype != "p" else ""
    return Change.adding(new), action, detail


def add(rule: Rule, who: Who, *, force: bool = False) -> Applied:
    """Add one row; Duplicate when the policy has it already."""
    change, action, detail = add_change(rule)
    applied = _apply(change, who, action, detail=detail, force=force)
    if not applied.added:  # written meanwhile by someone else
        raise Duplicate(change.add[0])
    return applied


def edit_change(rule_id: str, rule: Rule, *, since: int | None = None) -> tuple[Change, Rule]:
    """The change that replaces the row ``rule_id`` names by ``rule`` (empty when they are
    the same), and the row it replaces (see :func:`edit`)."""
    new = validate(rule)
    old = _current(rule_id, new.ptype, since, yours=new)
    if new == old:
        return Change(), old
    if new in snapshot().ruleset:
        raise Duplicate(new)
    return Change(add=(new,), remove=(old,)), old


def edit(
    rule_id: str, rule: Rule, who: Who, *, since: int | None = None, force: bool = False
) -> Applied:
    """Replace the row ``rule_id`` names by ``rule``, in one change.

    :param since: the revision the caller read the row at; when the row is gone, the
        audit log after it tells what the row became (Conflict), otherwise Missing.
    """
    change, old = edit_change(rule_id, rule, since=since)
    if not change:
        return Applied((), (), snapshot().revision)
    try:
        return _apply(change, who, "rule.edit", force=force)
    except NotFound:  # removed between our look and the write
        raise _conflict(old, change.add[0], since) from None


def remove_change(
    rule_id: str, *, ptype: str | None = None, since: int | None = None
) -> tuple[Change, str, str]:
    """The change that removes the row ``rule_id`` names, its audit action and detail."""
    old = _current(rule_id, ptype, since, yours=None)
    action = "rule.remove" if old.ptype == "p" else "role.remove"
    detail = old.values[0] if old.ptype != "p" else ""
    return Change.removing(old), action, detail


def remove(
    rule_id: str,
    who: Who,
    *,
    ptype: str | None = None,
    since: int | None = None,
    force: bool = False,
) -> Applied:
    """Remove the row ``rule_id`` names (Conflict or Missing when it is gone)."""
    change, action, detail = remove_change(rule_id, ptype=ptype, since=since)
    try:
        return _apply(change, who, action, detail=detail, force=force)
    except NotFound:
        raise _conflict(change.remove[0], None, since) from None


def _current(rule_id: str, ptype: str | None, since: int | None, *, yours: Rule | None) -> Rule:
    try:
        return find(rule_id, ptype)
    except Missing:
        users.engine().refresh()  # another instance may have written it since we looked
        try:
            return find(rule_id, ptype)
        except Missing:
            old = removed_since(rule_id, since, ptype=ptype)
            if old is None:
                raise
            raise Conflict(old[0], yours, old[1], old[2]) from None


def _conflict(old: Rule, yours: Rule | None, since: int | None) -> Conflict:
    found = removed_since(old.id, since, ptype=old.ptype)
    if found is None:
        return Conflict(old, yours, None, None)
    return Conflict(old, yours, found[1], found[2])


#: How far back (in revisions) a conflict is looked up; older forms just find the row gone.
CONFLICT_HORIZON = 1000
#: The edits a conflict can come from are small: an entry whose rows take more characters
#: than this (a bulk load) is not read.
EDIT_TEXT = 4096


def removed_since(
    rule_id: str, since: int | None, *, ptype: str | None = None
) -> tuple[Rule, Rule | None, AuditEntry] | None:
    """What became of a row gone since revision ``since``: the row, what replaced it (if
    it still stands), and the audit entry that removed it; None when the audit log does
    not show it (a bulk load removed it, or ``since`` is too old or not given).

    Reads only small edits (EDIT_TEXT) of the last CONFLICT_HORIZON revisions: a bounded
    read, whatever a client sends.
    """
    policy = users.engine()
    if since is None or not 0 <= since <= policy.revision:
        return None
    since = max(since, policy.revision - CONFLICT_HORIZON)
    try:
        entries = policy.store.audit_since(since, max_text=EDIT_TEXT, limit=CONFLICT_HORIZON)
    except DATABASE_ERRORS:
        return None  # the write path will say what is wrong with the database
    for at, entry in enumerate(entries):  # oldest first
        for rule in entry.removed:
            if rule.id != rule_id or (ptype is not None and rule.ptype != ptype):
                continue
            current: Rule | None = None
            same = [r for r in entry.added if r.ptype == rule.ptype]
            if entry.action == "rule.edit" and len(same) == 1:
                current = _follow(same[0], entries[at + 1 :])
            return rule, current, entry
    return None


def _follow(rule: Rule, later: list[AuditEntry]) -> Rule | None:
    """What ``rule`` became through the later edits (None when it was removed)."""
    for entry in later:
        if rule in entry.removed:
            same = [r for r in entry.added if r.ptype == rule.ptype]
            if entry.action != "rule.edit" or len(same) != 1:
                return None
            rule = same[0]
    return rule if rule in snapshot().ruleset else None


def member_of(subject: str) -> str:
    """The ``g`` row member a subject names: a role, an account's email, a live token."""
    return users.member(subject)


def assign_change(subject: str, role: str) -> Change:
    """The change that gives a subject a role (empty when it has it already)."""
    member = member_of(subject)
    rule = validate(Rule("g", (member, role)))
    users.check_role(rule.values[1])
    return Change() if rule in snapshot().ruleset else Change.adding(rule)


def assign(subject: str, role: str, who: Who, *, force: bool = False) -> bool:
    """Give a user, a role or a token a role; False when it had it already (nothing audited)."""
    change = assign_change(subject, role)
    if not change:
        return False
    member = change.add[0].values[0]
    applied = _apply(change, who, "role.assign", detail=member, force=force, strict=False)
    return applied.changed


def unassign_change(subject: str, role: str) -> Change:
    """The change that takes a role away (empty when the subject does not have it)."""
    # No account lookup: a row naming an account that no longer exists must still go.
    subject = subject.strip()
    member = subject if is_role(subject) or is_token(subject) else subject.lower()
    rule = Rule("g", (member, role.strip()))
    return Change.removing(rule) if rule in snapshot().stored_rows else Change()


def unassign(subject: str, role: str, who: Who, *, force: bool = False) -> bool:
    """Take a role away; False when the subject did not have it (nothing audited)."""
    change = unassign_change(subject, role)
    if not change:
        return False
    member = change.remove[0].values[0]
    applied = _apply(change, who, "role.remove", detail=member, force=force, strict=False)
    return applied.changed


def create_role(role: str, first: Rule, who: Who) -> Applied:
    """Create a role by writing its first rule (a role exists while rows name it)."""
    role = role.strip()
    if not is_role(role):
        raise EditError(
            "a role name is a lower-case word: a letter, then letters, digits, '_' or '-'",
            field="role",
        )
    if role in users.known_roles():
        raise EditError(f"the role {role!r} exists already", field="role")
    if first.ptype != "p" or first.values[0] != role:
        raise EditError("the first rule must name the new role as its subject", field="subject")
    return _apply(Change.adding(validate(first)), who, "role.create", detail=role, force=False)


# -- accounts ---------------------------------------------------------------------------


def set_active(email: str, active: bool, who: Who, *, force: bool = False) -> bool:
    """Set an account to a state (never a toggle); False when it was in it already."""
    return users.set_active(email, active, actor=who.actor, source=who.source, force=force)


# -- audit queries ----------------------------------------------------------------------


@dataclass(frozen=True)
class AuditQuery:
    """The filters and page of an audit listing, parsed once for every surface.

    ``since`` is inclusive; ``until`` is exclusive for a date-time and, for a bare date,
    covers that whole day (the editor's date pickers and the API agree).
    """

    actor: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    page: int = 1
    per_page: int = params.DEFAULT_PER_PAGE

    @classmethod
    def parse(cls, args: Mapping[str, str], *, per_page: int | None = None) -> AuditQuery:
        """Read ``actor``, ``since``, ``until``, ``page`` (and ``per_page`` unless fixed).

        :raises params.Invalid: listing every bad field at once.
        """
        found: dict[str, Any] = {}
        bad: list[params.BadParam] = []
        readers: dict[str, Callable[[str | None], object]] = {
            "actor": lambda v: params.text(v, "actor"),
            "since": lambda v: params.instant((v or "").strip(), "since"),
            "until": lambda v: params.instant((v or "").strip(), "until", end_of_day=True),
            "page": lambda v: params.page(v),
        }
        if per_page is None:
            readers["per_page"] = lambda v: params.number(
                v, "per_page", default=params.DEFAULT_PER_PAGE, maximum=params.MAX_PER_PAGE
            )
        for name, read in readers.items():
            try:
                found[name] = read(args.get(name))
            except params.BadParam as e:
                bad.append(e)
        if bad:
            raise params.Invalid(bad)
        if per_page is not None:
            found["per_page"] = per_page
        return cls(**found)

    def entries(self) -> tuple[list[AuditEntry], bool]:
        """Return this page's entries, newest first, and whether another page follows."""
        try:
            # One entry more than the page tells whether another follows, without a count.
            entries = users.engine().store.audit_entries(
                limit=self.per_page + 1,
                offset=(self.page - 1) * self.per_page,
                actor=self.actor,
                since=self.since,
                until=self.until,
            )
        except DATABASE_ERRORS as e:
            raise EngineUnavailable(f"cannot read the audit log: {database_reason(e)}") from e
        return entries[: self.per_page], len(entries) > self.per_page
