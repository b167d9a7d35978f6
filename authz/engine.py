"""PolicyEngine: the one owner of decisions and the one writer of policy.

Reads never lock: a decision reads the current snapshot through one reference. A write
validates every row, writes rows, audit entry, change-log entry and revision in one
transaction, then builds the next snapshot beside the current one and swaps the reference.
An instance that is behind applies the revisions it missed from the change log; it reads
every row again only when that log cannot bring it up to date.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from sqlalchemy.orm import Session

from authz.decision import Decision
from authz.errors import AuthzError
from authz.errors import EngineUnavailable
from authz.errors import LockoutRefused
from authz.errors import NotFound
from authz.errors import RequestTooLarge
from authz.errors import RuleError
from authz.errors import StaleRevision
from authz.errors import database_reason
from authz.expectations import Expectation
from authz.expectations import ExpectationsBroken
from authz.expectations import Result
from authz.expectations import broken
from authz.expectations import expectation
from authz.expectations import failures
from authz.expectations import plan as plan_tests
from authz.guards import LockoutGuard
from authz.model import PolicyModel
from authz.patterns import MAX_VALUE
from authz.rules import Rule
from authz.rules import is_role
from authz.rules import shape
from authz.rules import validate
from authz.snapshot import BadRow
from authz.snapshot import Snapshot
from authz.store import DATABASE_ERRORS
from authz.store import AuditEntry
from authz.store import BadLogEntry
from authz.store import LoggedChange
from authz.store import PolicyStore
from authz.store import Staging
from authz.store import audit_values
from authz.whatif import reached_by

log = logging.getLogger("authz")
_T = TypeVar("_T")

#: Changes of at least this many rows are staged, and hold the write lock only briefly.
STAGE_FROM = 1000
#: How often a staged change is planned again when other writes keep coming first.
STAGE_ATTEMPTS = 3
#: An instance behind by more revisions than this, or by more rows than CATCH_UP_ROWS,
#: reads every row instead of applying the change log.
CATCH_UP_REVISIONS = 1000
CATCH_UP_ROWS = 50_000
#: Seconds between checks that the stored entry of this instance's revision is still the one
#: it applied (a database restored from a backup and written again to the same number).
REWRITE_CHECK_EVERY = 5.0


class _Unknown:
    """The type of UNKNOWN."""


#: A change-log token that is not known (the chain is then not checked once).
UNKNOWN = _Unknown()


#: Called inside the write transaction with its session (e.g. to write an account row);
#: returns the subjects it deactivates (the lockout guard counts them out), or None.
Hook = Callable[[Session], Iterable[str] | None]
#: Returns the active user subjects as seen inside the write transaction.
SubjectsProvider = Callable[[Session], Iterable[str]]
#: Whether one subject is active, as seen inside the write transaction.
ActiveCheck = Callable[[Session, str], bool]


@dataclass(frozen=True)
class Change:
    """Rows to add and rows to remove, applied together."""

    add: tuple[Rule, ...] = ()
    remove: tuple[Rule, ...] = ()
    #: The model every row of ``add`` was already validated against (a policy file's
    #: rows, checked line by line when it was read), or None: then the write validates
    #: them. Only code that ran ``validate`` on each row with this very model sets it.
    validated: PolicyModel | None = field(default=None, compare=False, repr=False)

    @classmethod
    def adding(cls, *rules: Rule) -> Change:
        """A change that adds rows."""
        return cls(add=tuple(rules))

    @classmethod
    def removing(cls, *rules: Rule) -> Change:
        """A change that removes rows."""
        return cls(remove=tuple(rules))

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


@dataclass(frozen=True)
class Planned:
    """A change planned on the stored policy and not written (see PolicyEngine.what_if)."""

    before: Snapshot
    after: Snapshot
    added: tuple[Rule, ...]
    removed: tuple[Rule, ...]
    #: The policy tests stored when it was planned.
    expectations: list[Expectation]
    #: Why the write would be refused (a role cycle, the lockout guard, a broken policy
    #: test), or None.
    refused: AuthzError | None

    @property
    def changed(self) -> bool:
        """Whether any row would change."""
        return bool(self.added or self.removed)


@dataclass(frozen=True)
class Applied:
    """What a write did: the rows really added and removed, and the revision after it."""

    added: tuple[Rule, ...]
    removed: tuple[Rule, ...]
    revision: int

    @property
    def changed(self) -> bool:
        """Whether any row changed."""
        return bool(self.added or self.removed)


class PolicyEngine:
    """Decides requests from an in-memory snapshot and applies audited policy changes."""

    def __init__(
        self,
        model: PolicyModel,
        store: PolicyStore,
        *,
        guard: LockoutGuard | None = None,
        active_subjects: SubjectsProvider | None = None,
        is_active: ActiveCheck | None = None,
        freeze_gc: bool = False,
    ) -> None:
        self.model = model
        #: After each full load, move every object alive into the collector's permanent
        #: generation (``gc.freeze``): a large policy is millions of objects, and one full
        #: collection over them stops every thread for seconds. Garbage without cycles
        #: (old snapshots) is still freed when its last reference goes. For a program that
        #: owns its process, as a service worker does; off by default.
        self.freeze_gc = freeze_gc
        self.store = store
        self.guard = guard
        self.active_subjects = active_subjects
        self.is_active = is_active
        #: Stored policy tests already checked, by their stored values.
        self._checked_tests: dict[tuple[str, ...], Expectation] = {}
        #: An active subject that held the editor at the last guarded write: checked first.
        self._witness: str | None = None
        self._snapshot: Snapshot | None = None
        self._write_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        #: Catching up serializes: the listener and the poll (and a write) waking at once
        #: must not each read a large policy, or apply the same changes twice.
        self._advance_lock = threading.Lock()
        #: monotonic time the stored entry of this revision was last compared with ours.
        self._rewrite_checked = time.monotonic()
        self._listeners: list[Callable[[int], None]] = []
        self._account_listeners: list[Callable[[], None]] = []
        #: Counts swaps; tells a reload racing a newer swap from a database gone back.
        self._generation = 0
        self.accounts_revision: int | None = None
        #: monotonic time of the last successful load or revision check.
        self.verified_at = 0.0
        #: The current snapshot and the token of its revision's change-log entry (None:
        #: the revision has none); None when that token is not known.
        self._chain: tuple[Snapshot, str | None] | None = None
        #: How this instance caught up with other instances' writes: by the change log
        #: ("incremental") or by reading every row ("full").
        self.refreshes = {"incremental": 0, "full": 0}

    @classmethod
    def from_paths(
        cls, model_path: str | Path, store: PolicyStore, **kwargs: object
    ) -> PolicyEngine:
        """Build an engine from a model file path."""
        return cls(PolicyModel.from_file(model_path), store, **kwargs)  # type: ignore[arg-type]

    # -- reading ------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot; EngineUnavailable when none could be loaded."""
        snap = self._snapshot
        if snap is None:
            raise EngineUnavailable("the policy is not loaded")
        return snap

    @property
    def loaded(self) -> bool:
        """Whether a snapshot is in place."""
        return self._snapshot is not None

    @property
    def revision(self) -> int:
        """The revision of the current snapshot."""
        return self.snapshot.revision

    def rules(self) -> tuple[Rule, ...]:
        """Every rule row of the current snapshot."""
        return self.snapshot.rules

    def decide(self, sub: str, obj: str, act: str) -> Decision:
        """Decide one request from the snapshot; no database access.

        :raises RequestTooLarge: for a value longer than MAX_VALUE characters.
        :raises EngineUnavailable: when the snapshot cannot decide (fail closed).
        """
        snapshot = self._snapshot
        if snapshot is None:
            raise EngineUnavailable("the policy is not loaded")
        if len(obj) > MAX_VALUE or len(act) > MAX_VALUE or len(sub) > MAX_VALUE:
            # Pattern costs are bounded for values up to this length (authz.patterns).
            raise RequestTooLarge(f"a request value is longer than {MAX_VALUE} characters")
        try:
            return snapshot.fast(sub, obj, act)
        except EngineUnavailable:
            raise
        except Exception as e:  # a broken model or matcher must fail closed, never open
            raise EngineUnavailable(f"the engine could not decide: {e}") from e

    def explain(self, sub: str, obj: str, act: str) -> str:
        """Return the one-line explanation of a decision."""
        return self.decide(sub, obj, act).explain()

    def roles_for(self, subject: str) -> list[str]:
        """Every role a subject holds, directly or inherited."""
        return self.snapshot.roles_for(subject)

    # -- loading ------------------------------------------------------------------------

    def load(self) -> None:
        """Load every rule from the database and swap in the new snapshot.

        Every stored row is validated as the write path validates it. Bad rows are
        logged and listed on ``bad_rows``; when skipping them could grant access the new
        snapshot is refused (decisions raise EngineUnavailable) until they are removed.
        """
        since = self._generation
        try:
            revision, rules, ids = self.store.load_rows()
        except DATABASE_ERRORS as e:
            raise EngineUnavailable(f"cannot read the policy: {database_reason(e)}") from e
        current = self._snapshot
        # Rows the current snapshot decided on were validated against this very model.
        trusted = current.ruleset if current is not None and current.refused is None else None
        snapshot = Snapshot.stored(revision, rules, ids, self.model, trusted=trusted)
        try:
            token: str | None | _Unknown = self.store.change_token_of(revision)
        except DATABASE_ERRORS:
            token = UNKNOWN  # the next change is then applied without the chain check
        self._swap(snapshot, since=since, token=token)
        if self.freeze_gc and snapshot.kind == "index" and snapshot.refused is None:
            # Only a snapshot the index decides: it holds no reference cycle, so reference
            # counting frees it once replaced (frozen objects are never collected). Casbin's
            # enforcer is full of cycles, and a refused policy is read again at every poll.
            gc.freeze()
        if self.accounts_revision is None:
            try:
                self.accounts_revision = self.store.revisions()[1]
            except DATABASE_ERRORS:
                pass  # the next refresh records it
        self.verified_at = time.monotonic()

    def forget(self) -> None:
        """Drop the snapshot: decisions answer EngineUnavailable until the next load."""
        with self._swap_lock:
            self._snapshot = None
            self._generation += 1

    def after_fork(self) -> None:
        """In a process forked from this one's parent: locks of its own.

        A lock some thread of the parent held at the fork stays held in the child, where
        no thread will ever release it.
        """
        self._write_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._advance_lock = threading.Lock()

    @property
    def bad_rows(self) -> tuple[BadRow, ...]:
        """Stored rows of the current snapshot that failed validation."""
        snap = self._snapshot
        return snap.bad_rows if snap is not None else ()

    @property
    def refused(self) -> str | None:
        """Why the stored policy is refused (decisions answer 503), or None."""
        snap = self._snapshot
        return snap.refused if snap is not None else None

    def refresh(self) -> bool:
        """Reload when the database holds a newer revision; return whether it did.

        A refused policy is reloaded on every call, so a row fixed outside the engine
        (without a new revision) is picked up too.
        """
        try:
            current, accounts = self.store.revisions()
        except DATABASE_ERRORS as e:
            raise EngineUnavailable(f"cannot read the policy revision: {database_reason(e)}") from e
        if accounts != self.accounts_revision:
            # Also when it was never read (a failed first read): whatever was cached
            # meanwhile may predate a change made elsewhere, so it is dropped.
            self.accounts_changed()
            self.accounts_revision = accounts
        snap = self._snapshot
        if snap is not None and snap.revision == current and snap.refused is None:
            if not self._rewritten(snap):  # checked every REWRITE_CHECK_EVERY seconds
                self.verified_at = time.monotonic()
                return False
            log.warning(
                "the database's policy revision %d was written again since this instance "
                "read it (restored from a backup?): reading every row",
                current,
            )
            with self._advance_lock:
                self.load()
            return True
        self._advance(current)
        return True

    def _rewritten(self, snapshot: Snapshot) -> bool:
        """Whether the stored entry of the snapshot's revision is another write's: the
        database went back and was written again up to the same revision number."""
        now = time.monotonic()
        if now - self._rewrite_checked < REWRITE_CHECK_EVERY:
            return False  # a poll stays one query; this one, every few seconds
        self._rewrite_checked = now
        token = self._token(snapshot)
        if not isinstance(token, str):
            return False  # no entry of ours to compare (unknown, or a revision without one)
        try:
            stored = self.store.change_token_of(snapshot.revision)
        except DATABASE_ERRORS as e:
            raise EngineUnavailable(f"cannot read the change log: {database_reason(e)}") from e
        # None: pruned since (or never logged): nothing to tell.
        return stored is not None and stored != token

    def _advance(self, current: int) -> None:
        """Bring this instance to the stored revision ``current``: by the change log when
        it can, else by reading every row (which also handles bad rows and restores)."""
        with self._advance_lock:
            snap = self._snapshot
            if snap is not None and snap.refused is None and snap.revision > current:
                # The database went back, or a write here went past ``current`` while
                # this thread waited for the lock: ask again.
                try:
                    current = self.store.revision()
                except DATABASE_ERRORS as e:
                    raise EngineUnavailable(
                        f"cannot read the policy revision: {database_reason(e)}"
                    ) from e
            if snap is not None and snap.refused is None and snap.revision == current:
                return  # another thread caught up meanwhile
            self._advance_locked(snap, current)

    def _changes(
        self, since: int, until: int, session: Session | None = None
    ) -> list[LoggedChange] | None:
        """The logged changes after ``since`` up to ``until``, within the catch-up limits."""
        return self.store.read_changes(
            since,
            until,
            max_revisions=CATCH_UP_REVISIONS,
            max_rows=CATCH_UP_ROWS,
            session=session,
        )

    def _advance_locked(self, snap: Snapshot | None, current: int) -> None:
        # A refused snapshot is read again in full: a bad row may have been fixed by hand.
        if snap is not None and snap.refused is None and current > snap.revision:
            since = self._generation
            try:
                changes = self._changes(snap.revision, current)
            except BadLogEntry as e:
                log.warning("change log entry unreadable (%s); reading every row", e)
                changes = None
            except DATABASE_ERRORS as e:
                raise EngineUnavailable(f"cannot read the change log: {database_reason(e)}") from e
            followed = self._follow(snap, changes) if changes else None
            if followed is not None:
                after, token = followed
                # Only onto the snapshot the changes were applied to: anything swapped in
                # meanwhile is as new or newer, and the next refresh looks again.
                self._swap(after, since=since, token=token, onto=snap)
                self.refreshes["incremental"] += 1
                self.verified_at = time.monotonic()
                return
        self.refreshes["full"] += 1
        self.load()

    def _follow(self, base: Snapshot, changes: list[LoggedChange]) -> tuple[Snapshot, str] | None:
        """``base`` with the logged changes applied, and the last entry's token; None when
        they do not continue ``base`` (a restored database), hold a row the write path
        refuses, or lead to a row count other than the writer's."""
        token = self._token(base)
        for change in changes:
            if token is not UNKNOWN and change.parent != token:
                log.warning(
                    "change log revision %d does not follow this instance's revision %d "
                    "(database restored?); reading every row",
                    change.revision,
                    change.revision - 1,
                )
                return None
            token = change.token
        # The changes folded into one: rows removed on the way (present in ``base``), and
        # rows added on the way that are there at the end, in the order last added.
        plus: dict[Rule, None] = {}
        minus: dict[Rule, None] = {}
        try:
            for change in changes:
                for rule in change.removed:
                    if rule in plus:
                        del plus[rule]
                    else:
                        minus[rule] = None
                for rule in change.added:
                    # Stored rows are trusted no more than written ones (see load).
                    rule = validate(rule, self.model)
                    plus.pop(rule, None)
                    plus[rule] = None
            last = changes[-1]
            after = base.with_changes(last.revision, plus, minus)
        except Exception as e:  # noqa: BLE001 - a bad row: the full load reports and judges it
            log.warning("change log not applied (%s); reading every row", e)
            return None
        if last.row_count is not None and _stored_count(after) != last.row_count:
            log.warning(
                "change log gives %d rows at revision %d, the writer had %d; reading every row",
                _stored_count(after),
                last.revision,
                last.row_count,
            )
            return None
        return after, last.token

    def _token(self, snapshot: Snapshot) -> str | None | _Unknown:
        chain = self._chain
        if chain is None or chain[0] is not snapshot:
            return UNKNOWN
        return chain[1]

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(revision)`` after every change this engine commits."""
        self._listeners.append(listener)

    def on_accounts_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` when sessions must be re-checked (here or on another instance)."""
        self._account_listeners.append(listener)

    def accounts_changed(self) -> None:
        """Tell this instance's listeners that sessions must be re-checked.

        Account writes call it after their commit; other instances learn it from the
        accounts revision (:meth:`PolicyStore.accounts_changed`) at their next poll.
        """
        for listener in self._account_listeners:
            try:
                listener()
            except Exception:  # a listener must not break the write or the poll
                log.exception("accounts change listener failed")

    def _swap(
        self,
        snapshot: Snapshot,
        *,
        since: int,
        token: str | None | _Unknown = UNKNOWN,
        onto: Snapshot | None = None,
    ) -> bool:
        """Put ``snapshot`` in place unless a newer one was swapped in meanwhile.

        :param since: the swap count when the rows of ``snapshot`` were read.
        :param token: the change-log token of its revision, when known.
        :param onto: swap only if this is still the current snapshot.
        """
        # Swaps serialize (readers never take this lock).
        with self._swap_lock:
            current = self._snapshot
            if onto is not None and current is not onto:
                return False
            if current is not None and snapshot.revision < current.revision:
                if self._generation != since:
                    # A slow reload racing a newer write: it must not undo that write.
                    return False
                # Nothing newer arrived while these rows were read, yet the database
                # holds an older revision than ours: it was restored from a backup (or
                # rolled back by hand). The database is the truth; keeping ours would
                # also make every poll reload, forever.
                log.warning(
                    "the database holds policy revision %d, older than this instance's %d "
                    "(restored from a backup?): taking it",
                    snapshot.revision,
                    current.revision,
                )
            self._snapshot = snapshot
            self._chain = None if isinstance(token, _Unknown) else (snapshot, token)
            self._generation += 1
            return True

    # -- writing ------------------------------------------------------------------------

    def validate(self, rules: Iterable[Rule]) -> list[Rule]:
        """Validate rows against the model; return them normalized."""
        return [validate(r, self.model) for r in rules]

    def apply(
        self,
        change: Change,
        *,
        actor: str,
        source: str,
        action: str = "policy.change",
        detail: str = "",
        force: bool = False,
        strict: bool = False,
        expected_revision: int | None = None,
        hook: Hook | None = None,
    ) -> Applied:
        """Apply a change in one transaction with its audit entry; swap the snapshot.

        :param strict: raise NotFound when a row to remove is absent (single-row edits);
            otherwise absent rows are skipped and present rows are not added twice.
        :param expected_revision: refuse with StaleRevision unless the policy is
            still at this revision (a load planned on it; single-row edits use ``strict``).
        :param hook: run inside the transaction, e.g. to write an account row; it returns
            the subjects it deactivates, so the lockout guard judges the change without them.
        :raises RuleError, StaleRevision, NotFound, LockoutRefused, EngineUnavailable:
        """
        actor = actor[:255]  # the audit column's width; actors are emails or "cli:<user>"
        # Validated once: a million-row file's rows were each checked as it was read.
        add = list(change.add) if change.validated is self.model else self.validate(change.add)
        # Rows to remove need only name a stored row, even one that no longer validates
        # (e.g. after the model was replaced).
        remove = [self._removable(r) for r in change.remove]
        if hook is None and not strict and len(add) + len(remove) >= STAGE_FROM:
            try:
                return self._apply_staged(
                    add,
                    remove,
                    entry=AuditEntry(
                        actor=actor, source=source, action=action, forced=force, detail=detail
                    ),
                    force=force,
                    expected_revision=expected_revision,
                )
            except DATABASE_ERRORS as e:
                raise EngineUnavailable(f"the change was not saved: {database_reason(e)}") from e
        return self._locked_write(
            lambda read_behind: self._apply(
                add,
                remove,
                actor=actor,
                source=source,
                action=action,
                detail=detail,
                force=force,
                strict=strict,
                expected_revision=expected_revision,
                hook=hook,
                read_behind=read_behind,
            )
        )

    def _locked_write(self, work: Callable[[bool], _T]) -> _T:
        """Run ``work(read_behind)`` under the write lock, catching up first (without the
        lock) when another writer came first; the last attempt reads behind the lock."""
        for attempt in range(STAGE_ATTEMPTS):
            if attempt:
                # Behind another writer: reload first, without the lock (the first try
                # found out under the lock, for free; most writes are not behind).
                self._catch_up()
            with self._write_lock:
                try:
                    return work(attempt == STAGE_ATTEMPTS - 1)
                except _Moved:
                    continue  # another write came first: catch up without the lock
                except DATABASE_ERRORS as e:
                    raise EngineUnavailable(
                        f"the change was not saved: {database_reason(e)}"
                    ) from e
        raise AssertionError("unreachable: the last attempt reads behind the lock")

    # -- policy tests -------------------------------------------------------------------

    def change_expectations(
        self,
        add: Sequence[Expectation] = (),
        remove: Sequence[Expectation] = (),
        *,
        actor: str,
        source: str,
        action: str,
        replace_all: bool = False,
        force: bool = False,
        detail: str = "",
    ) -> tuple[tuple[Expectation, ...], tuple[Expectation, ...]]:
        """Add and remove policy tests in one audited transaction; return those really
        added and removed (nothing changed: nothing written, not even an audit entry).

        An expectation is added only when the policy keeps it now (ExpectationsBroken
        names those it does not, unless ``force``): every later write is judged against
        it. One for a request that has one already replaces it. Runs under the policy
        write lock, so no policy write is judged against a half-written set of tests.

        :param remove: expectations to remove, named by request (outcome and note ignored).
        :param replace_all: remove every stored expectation not in ``add`` (a file loaded
            in place of the stored ones).
        :raises ExpectationsBroken, RuleError, EngineUnavailable:
        """
        actor = actor[:255]
        add = [expectation(*item) for item in add]  # checked here too: they gate every write

        def work(read_behind: bool) -> tuple[tuple[Expectation, ...], tuple[Expectation, ...]]:
            with self.store.transaction() as session:
                revision = self.store.lock_revision(session)
                base, _token = self._locked_base(session, revision, read_behind=read_behind)
                stored = [
                    Expectation(s, m, p, o, n)
                    for _id, s, m, p, o, n in self.store.read_expectations(session)
                ]
                added, removed = plan_tests(stored, add, remove, replace_all=replace_all)
                if not (added or removed):
                    return (), ()
                failing = failures(base, added)
                if failing and not force:
                    raise ExpectationsBroken(failing, adding=True)
                note = _forced_detail(detail, failing) if failing else detail
                self.store.delete_expectations(
                    session, [(e.subject, e.method, e.path) for e in removed]
                )
                self.store.insert_expectations(
                    session, [(e.subject, e.method, e.path, e.outcome, e.note) for e in added]
                )
                self.store.insert_audit(
                    session,
                    AuditEntry(
                        actor=actor,
                        source=source,
                        action=action,
                        added=tuple(e.as_rule() for e in added),
                        removed=tuple(e.as_rule() for e in removed),
                        forced=bool(failing),
                        detail=note,
                        revision=revision,
                    ),
                )
            log.info(
                "%s by %s (%s): +%d -%d policy tests",
                action,
                actor,
                source,
                len(added),
                len(removed),
            )
            return added, removed

        return self._locked_write(work)

    def preview(self, change: Change, *, force: bool = False, strict: bool = False) -> Applied:
        """What :meth:`apply` would do, after every check it runs; nothing is written.

        Rows are validated, planned on the stored policy, checked for inheritance cycles
        and judged by the lockout guard and the policy tests exactly as a write would be.

        :raises RuleError, NotFound, LockoutRefused, ExpectationsBroken, EngineUnavailable:
            as apply would.
        """
        planned = self.what_if(change, force=force, strict=strict)
        if planned.refused is not None:
            raise planned.refused
        return Applied(planned.added, planned.removed, planned.after.revision)

    def what_if(self, change: Change, *, force: bool = False, strict: bool = False) -> Planned:
        """The policy before and after a change, planned on the stored policy as a write
        would plan it, with the policy tests and why the write would be refused (None when
        it would not be); nothing is written.

        :raises RuleError, NotFound: a row that does not validate, or (``strict``) a row to
            remove that is absent.
        :raises EngineUnavailable: the database cannot be read.
        """
        add = list(change.add) if change.validated is self.model else self.validate(change.add)
        remove = [self._removable(r) for r in change.remove]
        try:
            self._catch_up()
            with self.store.transaction() as session:
                revision = self.store.current_revision(session)
                base = self.snapshot
                if base.revision != revision:
                    rules, ids = self.store.read_rows(session)
                    base = Snapshot.stored(revision, rules, ids, self.model)
                added, removed = _plan(base, add, remove, strict=strict)
                tests = self.expectations(session)
                if not (added or removed):
                    return Planned(base, base, (), (), tests, None)
                after = base.with_changes(revision + 1, added, removed)
                refused: AuthzError | None = None
                try:
                    self._judged(
                        session, base, revision + 1, added, removed, force=force, after=after
                    )
                except (RuleError, LockoutRefused, ExpectationsBroken) as e:
                    refused = e
        except DATABASE_ERRORS as e:
            raise EngineUnavailable(f"the change was not checked: {database_reason(e)}") from e
        return Planned(base, after, added, removed, tests, refused)

    def _catch_up(self) -> None:
        """Reload first when this instance is behind, so no lock is held for a reload.

        The write re-checks the revision under the lock; this only keeps the full read
        (seconds, for a large policy) out of the time other writers wait.
        """
        snap = self._snapshot
        if snap is None:
            return
        try:
            revision = self.store.revision()
        except DATABASE_ERRORS as e:
            raise EngineUnavailable(f"cannot read the policy revision: {database_reason(e)}") from e
        if revision != snap.revision:
            self._advance(revision)

    def _removable(self, rule: Rule) -> Rule:
        try:
            return shape(rule, self.model)
        except RuleError:
            # A stored row of the wrong type or length is named exactly as stored.
            if any(bad.rule == rule for bad in self.bad_rows):
                return rule
            raise

    def _refuse_cycles(self, after: Snapshot, added: tuple[Rule, ...]) -> None:
        # A role that inherits from itself makes every member of the cycle hold every
        # role in it (e.g. anonymous -> admin -> user -> anonymous hands visitors admin).
        for rule in added:
            # Only a role can be inherited from: a user or a token member closes no cycle.
            if rule.ptype in self.model.roles and is_role(rule.values[0]):
                member, role = rule.values[0], rule.values[1]
                path = after.inheritance_path(role, member, rule.ptype)
                if path is not None:
                    cycle = " -> ".join([member, *path])
                    raise RuleError(
                        f"{rule} would make an inheritance cycle: {cycle}", field="role"
                    )

    def _judged(
        self,
        session: Session,
        base: Snapshot,
        revision: int,
        added: tuple[Rule, ...],
        removed: tuple[Rule, ...],
        *,
        force: bool,
        leaving: frozenset[str] = frozenset(),
        after: Snapshot | None = None,
    ) -> tuple[Snapshot, list[Result]]:
        """The snapshot after a planned change, once the change passed every check a write
        makes (inheritance cycles, the lockout guard, the policy tests); ``base`` when
        nothing changes. Also the policy tests a forced change breaks (for its audit entry).
        """
        changed = bool(added or removed)
        if after is None:
            after = base.with_changes(revision, added, removed) if changed else base
        self._refuse_cycles(after, added)
        if changed or leaving:
            self._guard(session, base, after, leaving, force=force)
        forced_past = (
            self._expect(session, base, after, (*added, *removed), force=force) if changed else []
        )
        return after, forced_past

    def expectations(self, session: Session | None = None) -> list[Expectation]:
        """The stored policy tests that read (see :meth:`bad_expectations` for the others)."""
        return self._read_expectations(session)[0]

    def stored_expectations(self) -> tuple[list[Expectation], list[Result]]:
        """The stored policy tests that read, and those that do not (one read of both)."""
        return self._read_expectations(None)

    def bad_expectations(self) -> list[Result]:
        """The stored policy tests that do not read (edited by hand), each with the reason:
        while there is one, every policy write is refused (except a forced one)."""
        return self._read_expectations(None)[1]

    def _read_expectations(self, session: Session | None) -> tuple[list[Expectation], list[Result]]:
        try:
            stored = (
                self.store.read_expectations(session)
                if session is not None
                else self.store.expectations()
            )
        except DATABASE_ERRORS as e:
            raise EngineUnavailable(f"cannot read the policy tests: {database_reason(e)}") from e
        good: list[Expectation] = []
        bad: list[Result] = []
        # Each stored row is checked once: a write reads them all, and most never change.
        known = self._checked_tests
        fresh: dict[tuple[str, ...], Expectation] = {}
        for row_id, subject, method, path, outcome, note in stored:
            key = (subject, method, path, outcome, note)
            item = known.get(key)
            if item is None:
                try:
                    item = expectation(subject, method, path, outcome, note)
                except RuleError as e:
                    # Kept as stored, so it can be named and removed by its id.
                    raw = Expectation(subject, method, path, outcome, note)
                    bad.append(
                        Result(
                            raw,
                            None,
                            f"stored policy test {row_id} ({subject}, {method}, {path}) "
                            f"does not read: {e}",
                        )
                    )
                    continue
            fresh[key] = item
            good.append(item)
        self._checked_tests = fresh
        for result in bad:
            log.warning("%s", result.error)
        return good, bad

    def _expect(
        self,
        session: Session,
        before: Snapshot,
        after: Snapshot,
        rows: tuple[Rule, ...],
        *,
        force: bool,
    ) -> list[Result]:
        """Refuse a change that breaks a policy test, unless forced; return the broken ones
        a forced change goes past.

        Only the tests of subjects the changed ``rows`` can reach are judged (the others
        decide as before). A stored test that does not read refuses every change: it
        cannot be judged, and skipping it would let through what it was there to stop.
        """
        good, bad = self._read_expectations(session)
        if bad and not force:
            raise ExpectationsBroken(bad, unreadable=True)
        reached = reached_by(before, after, rows) if good else None
        if reached is not None:
            good = [t for t in good if reached(t.subject)]
        found = broken(before, after, good)
        if found and not force:
            raise ExpectationsBroken(found)
        return [*bad, *found]

    def _guard(
        self,
        session: Session,
        before: Snapshot,
        after: Snapshot,
        leaving: frozenset[str] = frozenset(),
        *,
        force: bool,
    ) -> None:
        """Run the lockout guard on a change inside its transaction (see LockoutGuard)."""
        # While the stored policy is refused nobody can open the editor: nothing to keep.
        if force or before.refused is not None or after.refused is not None:
            return
        provider, guard = self.active_subjects, self.guard
        if guard is None or provider is None:
            return
        check = self.is_active

        def is_active(subject: str) -> bool:
            if check is not None:
                return check(session, subject)
            return subject in set(provider(session))

        self._witness = guard.check(
            before,
            after,
            active=lambda: provider(session),
            is_active=is_active,
            leaving=leaving,
            witness=self._witness,
        )

    def _apply(
        self,
        add: list[Rule],
        remove: list[Rule],
        *,
        actor: str,
        source: str,
        action: str,
        detail: str,
        force: bool,
        strict: bool,
        expected_revision: int | None,
        hook: Hook | None,
        read_behind: bool,
    ) -> Applied:
        """One write under the lock (see :meth:`apply`).

        :param read_behind: when this instance is behind, read the stored rows here,
            under the lock; otherwise raise _Moved so the caller catches up without it.
        """
        with self.store.transaction() as session:
            current_rev = self.store.lock_revision(session)
            since = self._generation
            if expected_revision is not None and expected_revision != current_rev:
                raise StaleRevision(expected_revision, current_rev)
            base, token = self._locked_base(session, current_rev, read_behind=read_behind)
            added, removed = _plan(base, add, remove, strict=strict)
            changed = bool(added or removed)
            leaving: frozenset[str] = frozenset()
            if hook is not None:
                leaving = frozenset(hook(session) or ())
                session.flush()
            new_rev = current_rev + 1 if changed else current_rev
            after, forced_past = self._judged(
                session, base, new_rev, added, removed, leaving=leaving, force=force
            )
            if not changed and hook is None:
                return Applied((), (), current_rev)
            if forced_past:
                detail = _forced_detail(detail, forced_past)
            self.store.delete_rules(session, removed)
            self.store.insert_rules(session, added)
            if changed:
                self.store.set_revision(session, new_rev)
                token = self.store.record_change(
                    session, new_rev, added, removed, row_count=_stored_count(after)
                )
                self.store.notify(session)
            self.store.insert_audit(
                session,
                AuditEntry(
                    actor=actor,
                    source=source,
                    action=action,
                    added=added,
                    removed=removed,
                    forced=force,
                    detail=detail,
                    revision=new_rev,
                ),
            )
        self._swap(after, since=since, token=token)
        self._committed(
            new_rev, added, removed, actor, source, action=action, detail=detail, notify=changed
        )
        return Applied(added, removed, new_rev)

    def _locked_base(
        self, session: Session, current_rev: int, *, read_behind: bool
    ) -> tuple[Snapshot, str | None | _Unknown]:
        """The snapshot of the stored revision ``current_rev``, under the write lock, and
        its change-log token: ours, brought up to date by the log when behind.

        :param read_behind: when the log cannot bring it up to date, read the stored rows
            here; otherwise raise _Moved so the caller catches up without the lock.
        """
        base = self._snapshot
        token = self._token(base) if base is not None else UNKNOWN
        if base is not None and base.revision < current_rev and base.refused is None:
            # Another instance wrote since our snapshot: its changes, from the log.
            try:
                changes = self._changes(base.revision, current_rev, session)
            except BadLogEntry:
                changes = None  # read the rows instead
            followed = self._follow(base, changes) if changes else None
            if followed is not None:
                base, token = followed
        if base is None or base.revision != current_rev:
            if not read_behind and base is not None:
                raise _Moved  # reading a large policy here would hold every writer up
            # Another instance wrote since our snapshot: decide on what is stored.
            rules, ids = self.store.read_rows(session)
            base = Snapshot.stored(current_rev, rules, ids, self.model)
            token = UNKNOWN
        return base, token

    def _committed(
        self,
        revision: int,
        added: tuple[Rule, ...],
        removed: tuple[Rule, ...],
        actor: str,
        source: str,
        held: float | None = None,
        *,
        action: str = "policy.change",
        detail: str = "",
        notify: bool = True,
    ) -> None:
        # One line per audited change, policy or account: who, what, which revision.
        lock = f"; lock held {held:.2f} s" if held is not None else ""
        log.info(
            "%s by %s (%s): policy revision %d, +%d -%d rows%s%s",
            action,
            actor,
            source,
            revision,
            len(added),
            len(removed),
            f"; {detail}" if detail else "",
            lock,
        )
        if not notify:
            return
        for listener in self._listeners:
            try:
                listener(revision)
            except Exception:  # a failed notification must not undo a committed write
                log.exception("policy change listener failed")

    def _apply_staged(
        self,
        add: list[Rule],
        remove: list[Rule],
        *,
        entry: AuditEntry,
        force: bool,
        expected_revision: int | None,
    ) -> Applied:
        """Apply a large change holding the write lock only for the final swap.

        Everything that grows with the change happens first, with no lock held: reading
        the stored rows, planning, building the next snapshot, staging the rows on a
        connection of their own and writing the audit text. Under the lock the staged
        rows move in with one statement each way. Writes that committed meanwhile (an
        editor's, typically a row or two) are read from the audit log and the change is
        rebased on top of them; only when they cannot be read is everything planned again.
        """
        with self.store.staging() as staging:
            for _attempt in range(STAGE_ATTEMPTS):
                revision, rows, ids = self.store.load_rows()
                if expected_revision is not None and expected_revision != revision:
                    raise StaleRevision(expected_revision, revision)
                current = self._snapshot
                if current is not None and current.revision == revision:
                    base = current
                else:
                    base = Snapshot.stored(revision, rows, ids, self.model)
                added, removed = _plan(base, add, remove, strict=False)
                if not added and not removed:
                    return Applied((), (), revision)
                after = base.with_changes(revision + 1, added, removed)
                self._refuse_cycles(after, added)
                gone = set(removed)
                staging.fill(added, [i for r, i in zip(rows, ids, strict=True) if r in gone])
                planned = _Staged(revision, base, after, added, removed)
                audit = audit_values(
                    replace(entry, added=added, removed=removed, revision=revision + 1)
                )
                with self._write_lock:
                    try:
                        rebase, since, locked_at, token, committed = self._commit_staged(
                            staging, planned, audit, entry, force
                        )
                    except _Moved:
                        continue  # the writes in between could not be read: plan again
                    held = time.monotonic() - locked_at
                    done = planned
                    if rebase is not None and committed is not None:
                        done = _Staged(
                            rebase.revision, base, committed, rebase.added, rebase.removed
                        )
                    self._swap(done.after, since=since, token=token)
                self._committed(
                    done.after.revision,
                    done.added,
                    done.removed,
                    entry.actor,
                    entry.source,
                    held,
                    action=entry.action,
                    detail=entry.detail,
                )
                return Applied(done.added, done.removed, done.after.revision)
        raise EngineUnavailable(
            f"the policy kept changing while a change of {len(add) + len(remove)} rows was "
            f"staged ({STAGE_ATTEMPTS} attempts); try again"
        )

    def _commit_staged(
        self,
        staging: Staging,
        planned: _Staged,
        audit: dict[str, object],
        entry: AuditEntry,
        force: bool,
    ) -> tuple[_Rebase | None, int, float, str, Snapshot | None]:
        """Move staged rows in, rebased on any write since they were planned.

        Return the rebase (None when nothing was written in between), the swap count at
        the lock, when the lock was taken, the change-log token of the new revision, and
        the snapshot of what was committed when it is not the planned one.
        """
        committed: Snapshot | None = None
        with staging.transaction() as session:
            audit_id = None
            if staging.early:
                # Rows and audit text go in first, uncommitted: nobody sees them and
                # nobody waits for them; the lock is held only from here to the commit.
                staging.insert(session)
                audit_id = self.store.insert_audit(session, audit)
            current = self.store.lock_revision(session)
            locked_at = time.monotonic()
            since = self._generation
            rebase = None
            if current != planned.revision:
                between = self.store.changes_between(
                    session, planned.revision, current, exclude=audit_id
                )
                if between is None:
                    raise _Moved
                rebase = self._rebase(session, staging, planned, between, current)
                if len(rebase.added) != len(planned.added) or len(rebase.removed) != len(
                    planned.removed
                ):
                    # Rows overlapped the writes in between: record what really changed.
                    audit = audit_values(
                        replace(
                            entry, added=rebase.added, removed=rebase.removed, revision=current + 1
                        )
                    )
                else:
                    audit = {**audit, "revision": current + 1}
                if audit_id is not None:
                    self.store.update_audit(session, audit_id, audit)
            # Judged as it commits: on the rows stored now (the writes in between each
            # passed on their own, but the two together may not), not as planned.
            before, after = planned.base, planned.after
            if rebase is not None:
                plus, minus = tuple(rebase.plus), tuple(rebase.minus)
                before = planned.base.with_changes(current, plus, minus)
                after = planned.after.with_changes(current + 1, plus, minus)
                committed = after
            self._guard(session, before, after, force=force)
            forced_past = self._expect(
                session,
                before,
                after,
                (*planned.added, *planned.removed, *rebase.plus, *rebase.minus)
                if rebase is not None
                else (*planned.added, *planned.removed),
                force=force,
            )
            if forced_past:
                audit = {**audit, "detail": _forced_detail(entry.detail, forced_past)}
                if audit_id is not None:
                    self.store.update_audit(session, audit_id, audit)
            staging.apply(session)
            self.store.set_revision(session, current + 1)
            token = self._log_staged(session, planned, rebase, early=staging.early)
            self.store.notify(session)
            if audit_id is None:
                self.store.insert_audit(session, audit)
        return rebase, since, locked_at, token, committed

    def _rebase(
        self,
        session: Session,
        staging: Staging,
        planned: _Staged,
        between: list[tuple[tuple[Rule, ...], tuple[Rule, ...]]],
        current: int,
    ) -> _Rebase:
        """The staged change as if planned on ``current``, given the changes in between."""
        plus: set[Rule] = set()  # present now, absent when planned
        minus: set[Rule] = set()  # absent now, present when planned
        readded: set[Rule] = set()  # added in between (perhaps with a new row id)
        for their_added, their_removed in between:
            for rule in their_removed:
                if rule in plus:
                    plus.discard(rule)
                else:
                    minus.add(rule)
            for rule in their_added:
                readded.add(rule)
                if rule in minus:
                    minus.discard(rule)
                else:
                    plus.add(rule)
        # A link added in between must not close a cycle with the rows we add.
        self._refuse_cycles(planned.after, tuple(r for r in plus if r.ptype in self.model.roles))
        # Rows they added that we add too are skipped; rows they removed stay removed.
        skip = [seq for seq, rule in enumerate(planned.added) if rule in plus]
        if skip:
            staging.unstage(session, skip)
        added = tuple(r for r in planned.added if r not in plus) if skip else planned.added
        removed = tuple(r for r in planned.removed if r not in minus)
        # A row we remove that was written again since has a new id: remove it by value.
        self.store.delete_rules(session, [r for r in removed if r in readded])
        return _Rebase(current, added, removed, plus, minus)

    def _log_staged(
        self, session: Session, planned: _Staged, rebase: _Rebase | None, *, early: bool
    ) -> str:
        """Log a staged change's rows as committed: rebased, they are what really changed."""
        if rebase is None:
            return self.store.record_change(
                session,
                planned.revision + 1,
                planned.added,
                planned.removed,
                row_count=_stored_count(planned.after),
            )
        # The rows at ``rebase.revision`` are the planned base's plus the rows added in
        # between and minus those removed (each present, resp. absent, at the base); the
        # rebased rows are absent, resp. present, there.
        count = (
            _stored_count(planned.base)
            + len(rebase.plus)
            - len(rebase.minus)
            + len(rebase.added)
            - len(rebase.removed)
        )
        # Staged rows whose ids were drawn before the lock (``early``) come before the rows
        # added in between in the stored order (a full read's), while applying the log in
        # revision order would put them after: which row explains a decision (and, under
        # an order-dependent effect, the decision) would differ. Followers read it all.
        return self.store.record_change(
            session,
            rebase.revision + 1,
            rebase.added,
            rebase.removed,
            row_count=count,
            marker=early and bool(rebase.plus),
        )


def _forced_detail(detail: str, forced_past: list[Result]) -> str:
    """An audit detail that records the policy tests a forced change broke."""
    shown = "; ".join(str(r.expectation) for r in forced_past[:20])
    more = f"; and {len(forced_past) - 20} more" if len(forced_past) > 20 else ""
    note = f"forced past {len(forced_past)} policy test(s): {shown}{more}"
    return f"{detail}; {note}" if detail else note


def _stored_count(snapshot: Snapshot) -> int:
    """Distinct stored rows: good and bad (what a change log entry's row_count counts)."""
    bad = snapshot.bad_rows
    return len(snapshot.ruleset) + (len({b.rule for b in bad}) if bad else 0)


class _Moved(Exception):
    """The policy revision moved while a large change was staged, in a way not rebased."""


@dataclass(frozen=True)
class _Rebase:
    """A staged change moved onto a newer revision: its rows, and the rows in between."""

    revision: int
    added: tuple[Rule, ...]
    removed: tuple[Rule, ...]
    plus: set[Rule]
    minus: set[Rule]


@dataclass(frozen=True)
class _Staged:
    """A large change as planned on one revision: the snapshots before and after it."""

    revision: int
    base: Snapshot
    after: Snapshot
    added: tuple[Rule, ...]
    removed: tuple[Rule, ...]


def _plan(
    base: Snapshot, add: list[Rule], remove: list[Rule], *, strict: bool
) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """Return the rows a change really adds and removes on top of ``base``."""
    # Bad stored rows count as present: removing one is how an admin fixes it.
    present = base.stored_rows
    missing = [r for r in remove if r not in present]
    if strict and missing:
        raise NotFound(f"no such rule: {missing[0]}")
    removed = tuple(dict.fromkeys(r for r in remove if r in present))
    gone = set(removed)
    added = tuple(dict.fromkeys(r for r in add if r not in present or r in gone))
    # A row both removed and added stays: drop it from both sides.
    both = {r for r in added if r in gone} if gone else set()
    if both:
        added = tuple(r for r in added if r not in both)
        removed = tuple(r for r in removed if r not in both)
    return added, removed
