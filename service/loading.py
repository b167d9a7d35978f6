"""Deploy-time policy files: plan a merge or a replace on the stored policy, check it, apply it.

A policy table holds two kinds of rows that change at different speeds. *Rules* (``p``
rows) and *role links* (``g`` rows whose member is a role, such as ``g, admin, user``)
ship with a release, in a file. *Role assignments* (``g`` rows whose member is an
account's email or ``token:NAME``) are given to people and programs while the service
runs. A deploy that replaces the rules must not take everyone's roles away, so a
replace covers the rules and role links only, unless it is asked to cover assignments
too; an export can write either part or both.

Framework-light: no request, no click. The command line calls it; the API may too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TextIO

from authz import Applied
from authz import Change
from authz import EngineUnavailable
from authz import PolicyEngine
from authz import Rule
from authz import StaleRevision
from authz import csvio
from authz.engine import STAGE_FROM
from authz.errors import PolicyFileError
from authz.errors import RuleError
from authz.errors import database_reason
from authz.model import PolicyModel
from authz.rules import Validator
from authz.rules import is_role
from authz.rules import is_token
from authz.rules import is_user
from authz.store import DATABASE_ERRORS
from service.editing import EditError
from service.editing import Who

#: How many times a replace is planned again when another write lands between its plan
#: and its write. Each attempt reads the stored policy afresh, so only a policy written
#: to continuously (several writes a second, each inside the short window) runs out.
ATTEMPTS = 5


class Part(StrEnum):
    """The two parts of a policy table, as an export or a replace names them."""

    RULES = "rules"  #: p rows and role-to-role links
    ASSIGNMENTS = "assignments"  #: g rows whose member is an email or a token


BOTH = frozenset(Part)


def part_of(rule: Rule, model: PolicyModel) -> Part:
    """Which part of the table a row belongs to."""
    if (
        rule.ptype in model.roles
        and rule.values
        and (is_user(rule.values[0]) or is_token(rule.values[0]))
    ):
        return Part.ASSIGNMENTS
    return Part.RULES


def select(rules: Iterable[Rule], model: PolicyModel, parts: frozenset[Part]) -> list[Rule]:
    """The rows of ``rules`` in the given parts, in their order."""
    return [r for r in rules if part_of(r, model) in parts]


def export(engine: PolicyEngine, out: TextIO, parts: frozenset[Part] = BOTH) -> Exported:
    """Write the CSV of the stored policy's ``parts`` to ``out`` as its rows are read.

    Rows come from the database a batch at a time and are written as they come, so the
    memory taken does not grow with the policy; no snapshot is needed. Each row is
    validated as a load validates stored rows: the rows the engine would not use (see
    ``bad_rows``) are left out and counted, so the file loads back to the same rows.

    :raises EngineUnavailable: the stored policy cannot be read.
    """
    model = engine.model
    skipped = 0

    check = Validator(model)  # validate's answers, the work per distinct value done once

    def rows() -> Iterator[Rule]:
        nonlocal skipped
        for stored in engine.store.stream_rules(csvio.ptype_order):
            try:
                rule = check(stored)
            except Exception:  # noqa: BLE001 - RuleError, or a value that cannot be read
                skipped += 1
                continue
            if part_of(rule, model) in parts:
                yield rule

    try:
        written = csvio.write(rows(), out)
    except DATABASE_ERRORS as e:
        raise EngineUnavailable(f"cannot read the policy: {database_reason(e)}") from e
    return Exported(written, skipped)


@dataclass(frozen=True)
class Exported:
    """What an export wrote: rows written, and stored rows left out as not valid."""

    rows: int
    skipped: int


class EmptyFile(EditError):
    """A load with no rows to load; ``would_remove`` is what a replace would have removed."""

    def __init__(self, message: str, would_remove: tuple[Rule, ...]) -> None:
        super().__init__(message)
        self.would_remove = would_remove


@dataclass(frozen=True)
class Plan:
    """A load planned on one revision of the stored policy."""

    change: Change
    #: the revision the plan was made on; the write is refused if the policy moved on.
    revision: int
    replace: bool
    #: the parts a replace makes equal to the file (a merge only adds, to any part).
    parts: frozenset[Part]
    #: rows of the file left out: assignments, when a replace does not cover them.
    left_out: tuple[Rule, ...] = ()

    @property
    def mode(self) -> str:
        """``merge`` or ``replace`` (the audit action's last word)."""
        return "replace" if self.replace else "merge"


def plan(
    engine: PolicyEngine,
    policy: csvio.PolicyFile,
    *,
    replace: bool,
    assignments: bool = False,
    allow_empty: bool = False,
) -> Plan:
    """Plan loading ``policy`` on the stored policy as it is now.

    :param replace: make the table's rules (and, with ``assignments``, its role
        assignments) equal to the file; otherwise only add the file's missing rows.
    :param allow_empty: let a replace with no rows in scope remove every row in scope.
    :raises EmptyFile: no rows to load (a merge), or none in scope (a replace, unless
        ``allow_empty``).
    :raises PolicyFileError: the file's role links close a cycle with stored rows,
        naming the file's lines.
    :raises EngineUnavailable: the stored policy cannot be read.
    """
    model = engine.model
    revision, stored = _stored(engine)
    parts = BOTH if (assignments or not replace) else frozenset({Part.RULES})
    if parts == BOTH:
        wanted: Sequence[Rule] = policy.rules
        left_out: tuple[Rule, ...] = ()
        change = csvio.plan(stored, wanted, replace=replace)
    else:
        wanted = select(policy.rules, model, parts)
        left_out = tuple(r for r in policy.rules if part_of(r, model) not in parts)
        change = csvio.plan(select(stored, model, parts), wanted, replace=replace)
    if policy.model is model:
        change = dataclasses.replace(change, validated=model)  # each row checked when read
    if not wanted and not (replace and allow_empty):
        where = f"{policy.path}: " if policy.path else ""
        if policy.rules:
            what = (
                f"no rules or role links (its {len(left_out)} role assignment row(s) are left out)"
            )
        else:
            what = "no rows"
        raise EmptyFile(f"{where}the file has {what}; nothing was changed", change.remove)
    _refuse_cycles(policy, stored, change, model)
    return Plan(change, revision, replace, parts, left_out)


def _stored(engine: PolicyEngine) -> tuple[int, Collection[Rule]]:
    """The revision and every stored row, bad ones included (a replace removes them too).

    From the engine's snapshot when it is loaded; otherwise straight from the database,
    without building a snapshot (``policy load`` on a large policy needs only the rows).
    """
    if engine.loaded:
        engine.refresh()
        snapshot = engine.snapshot
        return snapshot.revision, snapshot.stored_rows.keys()
    try:
        revision, rows = engine.store.load()
    except DATABASE_ERRORS as e:
        raise EngineUnavailable(f"cannot read the policy: {database_reason(e)}") from e
    return revision, dict.fromkeys(rows).keys()


def _refuse_cycles(
    policy: csvio.PolicyFile, current: Iterable[Rule], change: Change, model: PolicyModel
) -> None:
    """Name the file lines of rows that would close a role cycle with the stored rows.

    The file's own cycles were refused when it was read; these need the table's rows too.
    Only links whose member is a role can close one (see csvio.role_cycles).
    """

    def link(rule: Rule) -> bool:
        return rule.ptype in model.roles and bool(rule.values) and is_role(rule.values[0])

    if not any(link(r) for r in change.add):
        return
    gone = set(change.remove)
    after = [r for r in current if link(r) and r not in gone]
    after += [r for r in change.add if link(r)]
    added = set(change.add)
    errors: list[RuleError] = []
    for cycle in csvio.role_cycles(after, model):
        mine = [r for r in cycle if r in added]
        if not mine:
            continue  # an old cycle (the engine refused the stored policy already)
        lines = sorted(n for n in (policy.line_of(r) for r in mine) if n is not None)
        at = cycle.index(mine[-1])
        cycle = cycle[at:] + cycle[:at]  # read from the file's row that closes it
        stored = [f"[{r}]" for r in cycle if r not in added]
        errors.append(
            RuleError(
                f"closes a role cycle with rows in the table: {csvio.cycle_text(cycle)} "
                f"(file line(s) {', '.join(map(str, lines))}; table: {', '.join(stored)})",
                line=lines[-1] if lines else None,
                field="role",
            )
        )
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise PolicyFileError(errors, policy.path)


def check(engine: PolicyEngine, planned: Plan, *, force: bool = False) -> Applied:
    """Run every check the write would run (validation, cycles, lockout guard); write nothing.

    :raises RuleError, LockoutRefused, EngineUnavailable: what the write would raise.
    """
    return engine.preview(planned.change, force=force)


def load(
    engine: PolicyEngine,
    policy: csvio.PolicyFile,
    who: Who,
    *,
    replace: bool,
    assignments: bool = False,
    allow_empty: bool = False,
    force: bool = False,
) -> tuple[Plan, Applied]:
    """Plan and apply a load in one transaction, on the revision it was planned on.

    A write landing between the plan and the apply makes the apply refuse with
    StaleRevision; the load is then planned again on the new policy, so after a replace
    the table's rows in scope equal the file's, whatever was written meanwhile.

    :raises EmptyFile, PolicyFileError, RuleError, LockoutRefused, EngineUnavailable:
    :raises StaleRevision: when the policy moved on before each of ATTEMPTS writes.
    """
    stale: StaleRevision | None = None
    done: list[Applied] = []
    first: Plan | None = None
    for _attempt in range(ATTEMPTS):
        planned = plan(
            engine, policy, replace=replace, assignments=assignments, allow_empty=allow_empty
        )
        first = first or planned
        if not planned.change:
            if not done:
                # Nothing to write (the table in scope already equals the file).
                return planned, Applied((), (), planned.revision)
            break  # the table in scope equals the file
        try:
            applied = engine.apply(
                planned.change,
                actor=who.actor,
                source=who.source,
                action=f"policy.load.{planned.mode}",
                detail=policy.path or "",
                force=force,
                expected_revision=planned.revision,
            )
        except StaleRevision as e:
            stale = e
            continue
        done.append(applied)
        if not replace or len(planned.change.add) + len(planned.change.remove) < STAGE_FROM:
            break
        # A large change is staged, and writes landing meanwhile are kept on top of it:
        # plan again, and write what now differs from the file (usually nothing).
    if done:
        assert first is not None
        return first, Applied(
            tuple(r for a in done for r in a.added),
            tuple(r for a in done for r in a.removed),
            done[-1].revision,
        )
    assert stale is not None
    raise stale
