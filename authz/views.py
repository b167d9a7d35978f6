"""Read views of a snapshot for the admin pages and the API: lists, pages, lookups.

A page of a million-row policy must not scan the rows. The indexes here (rows by type,
rules by subject, assignments by member and by role, rows by id, rows by path) are
built once per *base* of rows (:meth:`Snapshot.layers`): the snapshots a change derives
share that base and differ from it by a small overlay (the rows added since, the base
rows removed since), so a view of a later snapshot is the base's indexes corrected by
that overlay, at the cost of the overlay. A new base (a full load, or a compaction of
the overlay) builds them anew, once, on first use.

Nothing here decides a request; it only lists rows. Framework-free, like all of authz.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import threading
from array import array
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from itertools import accumulate
from itertools import chain
from itertools import islice
from typing import TYPE_CHECKING

from authz.rules import Rule

if TYPE_CHECKING:
    from authz.snapshot import Snapshot

RULE, LINK = "p", "g"
#: How many ids of rows shown lately a base keeps.
SHOWN = 10_000


#: Matching functions whose patterns match only values that begin with the pattern's
#: text before its first special character (all are anchored at the start).
ANCHORED = frozenset(
    {
        "eq",
        "keyMatch",
        "keyMatch2",
        "keyMatch3",
        "keyMatch4",
        "keyMatch5",
        "regexMatch",
        "globMatch",
    }
)
_SPECIAL = re.compile(r"[.^$*+?{}\[\]\\|():!]")


def literal_start(kind: str, pattern: str) -> str:
    """Text every value ``kind(value, pattern)`` accepts begins with ("" when unknown)."""
    if kind == "eq":
        return pattern
    if kind not in ANCHORED or "|" in pattern:
        return ""  # an alternative may begin anywhere
    special = _SPECIAL.search(pattern)
    if special is None:
        return pattern
    # The character before a quantifier ("ab?", "ab*", "ab{0}") may be absent.
    return pattern[: max(0, special.start() - 1)]


class Base:
    """Indexes over one base of rows; never changed once built (each built on first use)."""

    def __init__(self, rows: Mapping[Rule, None]) -> None:
        self.rows = rows
        self._lock = threading.Lock()
        #: p rows and g rows, in policy order.
        self.p: list[Rule] = []
        self.g: list[Rule] = []
        #: Positions in ``p`` of each subject's rows, in ``g`` of each member's rows; g rows
        #: by role; each in policy order.
        self.by_subject: dict[str, array[int]] = {}
        self.by_member: dict[str, array[int]] = {}
        self.by_role: dict[str, list[Rule]] = {}
        p, g = self.p, self.g
        by_subject, by_member, by_role = self.by_subject, self.by_member, self.by_role
        for rule in rows:
            ptype, values = rule
            if ptype == RULE:
                if values:
                    at = by_subject.get(values[0])
                    if at is None:
                        by_subject[values[0]] = array("q", (len(p),))
                    else:
                        at.append(len(p))
                p.append(rule)
            elif ptype == LINK and len(values) >= 2:
                at = by_member.get(values[0])
                if at is None:
                    by_member[values[0]] = array("q", (len(g),))
                else:
                    at.append(len(g))
                g.append(rule)
                found = by_role.get(values[1])
                if found is None:
                    by_role[values[1]] = [rule]
                else:
                    found.append(rule)
        self._ids: tuple[array[int], array[int], list[Rule]] | None = None
        self._text: tuple[str, array[int]] | None = None
        self._effects: dict[int, dict[str, array[int]]] = {}
        #: Rows by id, for ids recently shown (a listing's rows are the ones asked for
        #: next), so that a lookup rarely needs the whole id index.
        self._shown: dict[str, Rule] = {}
        self._paths: dict[tuple[str, int], dict[str, Rule | list[Rule]]] = {}

    def remember(self, rules: Sequence[Rule]) -> None:
        """Keep the ids of rows just shown (at most SHOWN of them, the latest)."""
        shown = self._shown
        for rule in rules:
            shown[rule.id] = rule
        if len(shown) > SHOWN:
            for old in list(shown)[: len(shown) - SHOWN]:
                shown.pop(old, None)  # another thread may have dropped it already

    def paths(self, kind: str, at: int) -> dict[str, Rule | list[Rule]]:
        """The p rows by the literal start of their value ``at`` (a pattern of ``kind``):
        every value the pattern matches begins with that start."""
        with self._lock:
            found = self._paths.get((kind, at))
            if found is None:
                found = {}
                for rule in self.p:
                    if at >= len(rule.values):
                        continue
                    key = literal_start(kind, rule.values[at])
                    held = found.get(key)
                    if held is None:
                        found[key] = rule
                    elif isinstance(held, list):
                        held.append(rule)
                    else:
                        found[key] = [held, rule]
                self._paths = {(kind, at): found}  # one path index per base at a time
            return found

    def text(self) -> tuple[str, array[int]]:
        """The p rows as one lower-case text, a row a line, values apart by US (0x1f),
        and where each line starts: a substring search runs over it at C speed."""
        with self._lock:
            if self._text is None:
                lines = ["\x1f".join(r.values).lower() for r in self.p]
                starts = array("q", [0])
                starts.extend(accumulate(len(line) + 1 for line in lines))
                self._text = ("\n".join(lines), starts)
            return self._text

    def ids(self) -> tuple[array[int], array[int], list[Rule]]:
        """Every base row by id: sorted 64-bit id prefixes, their rows' positions, the rows."""
        with self._lock:
            if self._ids is None:
                everything = list(self.rows)
                sha256, number = hashlib.sha256, int.from_bytes
                # Rule.id's hash, its first 64 bits as a number, in one loop.
                keys = [
                    number(sha256("\x1f".join((p, *v)).encode()).digest()[:8], "big")
                    for p, v in everything
                ]
                order = sorted(range(len(keys)), key=keys.__getitem__)
                self._ids = (
                    array("Q", [keys[i] for i in order]),
                    array("q", order),
                    everything,
                )
            return self._ids

    def effects(self, at: int) -> dict[str, array[int]]:
        """Positions in ``p`` of the rows by their value ``at`` (the effect), in order."""
        with self._lock:
            found = self._effects.get(at)
            if found is None:
                found = {}
                for position, rule in enumerate(self.p):
                    value = rule.values[at] if at < len(rule.values) else ""
                    held = found.get(value)
                    if held is None:
                        found[value] = held = array("q")
                    held.append(position)
                self._effects = {at: found}
            return found

    def find(self, rule_id: str) -> Rule | None:
        """The base row with this id (removed since or not), or None."""
        if len(rule_id) != 16:
            return None
        shown = self._shown.get(rule_id)
        if shown is not None:
            return shown
        try:
            key = int(rule_id, 16)
        except ValueError:
            return None
        keys, positions, everything = self.ids()
        at = bisect.bisect_left(keys, key)
        while at < len(keys) and keys[at] == key:
            rule = everything[positions[at]]
            if rule.id == rule_id:
                return rule
            at += 1
        return None


class View:
    """One snapshot's rows read through its base's indexes and its overlay."""

    def __init__(
        self, snapshot: Snapshot, base: Base, added: Sequence[Rule], removed: frozenset[Rule]
    ) -> None:
        #: The snapshot's rows (not the snapshot: a cached view must not keep an old
        #: snapshot's decider alive).
        self.ruleset = snapshot.ruleset
        self.base = base
        self.added = added
        self.removed = removed
        self._added_by: dict[str, list[Rule]] | None = None
        self._removed_at: dict[str, list[int]] = {}
        self._counts: dict[str, int] = {}
        self._links: tuple[dict[str, list[Rule]], dict[str, list[Rule]], dict[str, int]] | None = (
            None
        )

    # -- the overlay ---------------------------------------------------------------------

    def _live(self, rows: Sequence[Rule]) -> Iterator[Rule]:
        removed = self.removed
        if not removed:
            return iter(rows)
        return (r for r in rows if r not in removed)

    def _added(self, ptype: str) -> list[Rule]:
        if self._added_by is None:
            by: dict[str, list[Rule]] = {}
            for rule in self.added:
                by.setdefault(rule.ptype, []).append(rule)
            self._added_by = by
        return self._added_by.get(ptype, [])

    def _listing(self, ptype: str) -> list[Rule]:
        return self.base.p if ptype == RULE else self.base.g

    def _removed_positions(self, ptype: str) -> list[int]:
        """Sorted positions, in the base's list of ``ptype`` rows, of its rows removed since."""
        if ptype not in self._removed_at:
            gone = [r for r in self.removed if r.ptype == ptype]
            positions = []
            if gone:
                where = self._position_map(ptype, gone)
                positions = sorted(where[r] for r in gone if r in where)
            self._removed_at[ptype] = positions
        return self._removed_at[ptype]

    def _position_map(self, ptype: str, gone: list[Rule]) -> dict[Rule, int]:
        """Positions of some rows in the base's list of ``ptype`` rows, found among the
        positions of the rows of the same subject (or member)."""
        base = self.base
        listing = self._listing(ptype)
        by_first = base.by_subject if ptype == RULE else base.by_member
        found: dict[Rule, int] = {}
        for rule in gone:
            for position in by_first.get(rule.values[0], ()) if rule.values else ():
                if listing[position] == rule:
                    found[rule] = position
                    break
        return found

    # -- listings ------------------------------------------------------------------------

    def count(self, ptype: str) -> int:
        """How many rows of ``ptype`` (p or g) the snapshot has."""
        return (
            len(self._listing(ptype))
            - len(self._removed_positions(ptype))
            + len(self._added(ptype))
        )

    def page(self, ptype: str, offset: int, limit: int) -> list[Rule]:
        """Rows ``offset`` to ``offset + limit`` of ``ptype``, in policy order, without a scan."""
        listing = self._listing(ptype)
        return self._paged(
            listing.__getitem__,
            len(listing),
            self._removed_positions(ptype),
            self._added(ptype),
            offset,
            limit,
        )

    def _paged(
        self,
        row: Callable[[int], Rule],
        length: int,
        removed: list[int],
        added: list[Rule],
        offset: int,
        limit: int,
    ) -> list[Rule]:
        """A page of a base listing (``row(i)`` for i below ``length``) without the rows at
        the sorted positions ``removed``, followed by ``added``."""
        live_base = length - len(removed)
        found: list[Rule] = []
        if offset < live_base:
            # The base position of the offset-th live row: the smallest b with
            # b + 1 - (removed rows at or before b) > offset.
            low, high = offset, offset + len(removed)
            while low < high:
                middle = (low + high) // 2
                if middle + 1 - bisect.bisect_right(removed, middle) > offset:
                    high = middle
                else:
                    low = middle + 1
            gone = self.removed
            at = low
            while at < length and len(found) < limit:
                rule = row(at)
                if rule not in gone:
                    found.append(rule)
                at += 1
        rest = limit - len(found)
        if rest > 0:
            start = max(0, offset - live_base)
            found.extend(added[start : start + rest])
        return found

    def with_effect(self, at: int, effect: str, offset: int, limit: int) -> tuple[int, list[Rule]]:
        """The p rows whose value ``at`` (the effect) is ``effect``: how many, and a page."""
        positions = self.base.effects(at).get(effect, array("q"))
        listing = self.base.p
        # The removed rows of this effect, as indexes into ``positions``.
        removed = [
            bisect.bisect_left(positions, p)
            for p in self._removed_positions(RULE)
            if listing[p].values[at : at + 1] == (effect,)
        ]
        added = [r for r in self._added(RULE) if r.values[at : at + 1] == (effect,)]
        total = len(positions) - len(removed) + len(added)
        page = self._paged(
            lambda i: listing[positions[i]], len(positions), removed, added, offset, limit
        )
        return total, page

    def rules_of(self, *subjects: str) -> list[Rule]:
        """The p rows naming any of these subjects, in policy order."""
        listing, by_subject = self.base.p, self.base.by_subject
        positions = [by_subject.get(s, ()) for s in dict.fromkeys(subjects)]
        merged = positions[0] if len(positions) == 1 else sorted(chain.from_iterable(positions))
        rows = list(self._live([listing[at] for at in merged]))
        names = set(subjects)
        rows.extend(r for r in self._added(RULE) if r.values and r.values[0] in names)
        return rows

    def _added_links(self) -> tuple[dict[str, list[Rule]], dict[str, list[Rule]], dict[str, int]]:
        """The overlay's g rows by member and by role, and its removed g rows counted by
        role (once per view: a page may ask for a thousand roles)."""
        if self._links is None:
            by_member: dict[str, list[Rule]] = {}
            by_role: dict[str, list[Rule]] = {}
            for rule in self._added(LINK):
                by_member.setdefault(rule.values[0], []).append(rule)
                by_role.setdefault(rule.values[1], []).append(rule)
            gone: dict[str, int] = {}
            for rule in self.removed:
                if rule.ptype == LINK and len(rule.values) >= 2:
                    gone[rule.values[1]] = gone.get(rule.values[1], 0) + 1
            self._links = (by_member, by_role, gone)
        return self._links

    def links_of(self, member: str) -> list[Rule]:
        """The g rows of this member (its direct roles), in policy order."""
        listing = self.base.g
        rows = list(self._live([listing[at] for at in self.base.by_member.get(member, ())]))
        rows.extend(self._added_links()[0].get(member, ()))
        return rows

    def links_to(self, role: str) -> list[Rule]:
        """The g rows into this role (its direct members), in policy order."""
        rows = list(self._live(self.base.by_role.get(role, ())))
        rows.extend(self._added_links()[1].get(role, ()))
        return rows

    def member_count(self, role: str) -> int:
        """How many direct members a role has (without listing them)."""
        _by_member, by_role, gone = self._added_links()
        base = len(self.base.by_role.get(role, ()))
        return base - gone.get(role, 0) + len(by_role.get(role, ()))

    def search(self, q: str, offset: int, limit: int) -> tuple[int, list[Rule]]:
        """The p rows holding ``q`` (lower case) in any value: how many, and a page.

        Counted over the base's text in C (one line per row), corrected by the overlay;
        the page reads the matches as far as it goes.
        """
        if "\n" in q or "\x1f" in q:  # would match across values: check row by row
            rows = [r for r in self._all(RULE) if any(q in v.lower() for v in r.values)]
            return len(rows), rows[offset : offset + limit]
        text, starts = self.base.text()
        pattern = re.compile(re.escape(q) + "[^\n]*")

        def holds(rule: Rule) -> bool:
            return any(q in v.lower() for v in rule.values)

        gone = self.removed
        added = [r for r in self._added(RULE) if holds(r)]
        count = self._counts.get(q)
        if count is None:
            # A match runs to the end of its line, so each line counts once.
            count = pattern.subn("", text)[1] if q in text else 0
            count -= sum(1 for r in gone if r.ptype == RULE and holds(r))
            count += len(added)
            self._counts = {q: count}
        if limit <= 0:
            return count, []
        listing = self.base.p

        def matches() -> Iterator[Rule]:
            for match in pattern.finditer(text):
                rule = listing[bisect.bisect_right(starts, match.start()) - 1]
                if rule not in gone:
                    yield rule
            yield from added

        return count, list(islice(matches(), offset, offset + limit))

    def rules_matching(
        self, kind: str, at: int, value: str, match: Callable[[str, str], bool]
    ) -> list[Rule]:
        """The p rows whose value ``at`` (a pattern of ``kind``) accepts ``value``, in no
        particular order; ``match(value, pattern)`` confirms each candidate."""
        paths = self.base.paths(kind, at)
        candidates: list[Rule] = []
        for end in range(len(value) + 1):
            held = paths.get(value[:end])
            if held is None:
                continue
            if isinstance(held, list):
                candidates.extend(held)
            else:
                candidates.append(held)
        gone = self.removed
        candidates = [r for r in candidates if r not in gone]
        candidates.extend(r for r in self._added(RULE) if at < len(r.values))
        return [r for r in candidates if match(value, r.values[at])]

    def all_rules_iter(self) -> Iterator[Rule]:
        """Every p row, in policy order, read lazily."""
        return self._all(RULE)

    def all_rules(self) -> list[Rule]:
        """Every p row, in policy order (a scan: for filters no index serves)."""
        return list(self._all(RULE))

    def _all(self, ptype: str) -> Iterator[Rule]:
        yield from self._live(self._listing(ptype))
        yield from self._added(ptype)

    def find(self, rule_id: str, near: str = "") -> Rule | None:
        """The row with this id, or None (the overlay, then the base's id index).

        :param near: the subject (or member) the row is believed to name: its rows are
            looked at first, which spares building the id index of a million rows.
        """
        for rule in self.added:
            if rule.id == rule_id:
                return rule
        if near:
            for rule in (*self.rules_of(near), *self.links_of(near)):
                if rule.id == rule_id:
                    self.base.remember((rule,))
                    return rule
        found = self.base.find(rule_id)
        # Rows shown lately may be rows added since the base and gone again.
        if found is None or found not in self.ruleset:
            return None
        return found


#: The base indexed last (its indexes may take a few hundred MB at a million rows: an
#: older one is let go as soon as a newer one is built), and the views read lately.
_bases: list[Base] = []
_views: list[View] = []
_lock = threading.Lock()
KEEP_BASES, KEEP_VIEWS = 1, 2


def view(snapshot: Snapshot) -> View:
    """The read view of a snapshot (the base's indexes built once, on first use)."""
    ruleset = snapshot.ruleset
    with _lock:
        for known in _views:
            if known.ruleset is ruleset:  # the same rows: the same view
                return known
    rows, added, removed = snapshot.layers()
    with _lock:
        base = next((b for b in _bases if b.rows is rows), None)
    if base is None:
        built = Base(rows)
        with _lock:
            base = next((b for b in _bases if b.rows is rows), None)
            if base is None:
                base = built
                _bases.append(base)
                del _bases[:-KEEP_BASES]
    made = View(snapshot, base, added, removed)
    with _lock:
        _views.append(made)
        kept = [v for v in _views if v.base in _bases][-KEEP_VIEWS:]
        _views[:] = kept
    return made
