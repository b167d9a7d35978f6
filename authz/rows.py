"""Policy rows in order, shared between snapshots: a change costs the size of the change.

A snapshot's rows are a base dict that is never mutated, plus the rows added and removed
since it was built. The next snapshot shares the base and copies only the (small)
overlay; once the overlay grows past a fraction of the base, the rows are compacted into
a new base. Copying 110,000 rows for every one-row change cost milliseconds; this costs
microseconds, and the compaction averages out to a few row copies per change.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping

from authz.rules import Rule

#: The overlay is compacted into a new base beyond max(MIN_OVERLAY, base size / SHARE).
MIN_OVERLAY = 256
SHARE = 32


class Rows(Mapping[Rule, None]):
    """An immutable ordered set of rows, read as a Mapping (``rule in rows``, iteration).

    Order is the policy order: the base's rows not removed, then the rows added since, in
    the order they were added (a row removed and added again moves to the end, as a
    dict's key deleted and inserted again does).
    """

    __slots__ = ("_base", "_added", "_removed", "_length")

    def __init__(
        self,
        base: dict[Rule, None] | None = None,
        added: dict[Rule, None] | None = None,
        removed: frozenset[Rule] = frozenset(),
    ) -> None:
        self._base = base if base is not None else {}
        self._added = added if added is not None else {}
        #: Rows of the base that are gone (some may have been added again since).
        self._removed = removed
        self._length = len(self._base) - len(removed) + len(self._added)

    def __getitem__(self, rule: Rule) -> None:
        if rule in self:
            return None
        raise KeyError(rule)

    def __contains__(self, rule: object) -> bool:
        return rule in self._added or (rule in self._base and rule not in self._removed)

    def __iter__(self) -> Iterator[Rule]:
        removed = self._removed
        if removed:
            yield from (r for r in self._base if r not in removed)
        else:
            yield from self._base
        yield from self._added

    def __len__(self) -> int:
        return self._length

    @property
    def overlay(self) -> int:
        """How many rows the overlay holds (what the next change copies)."""
        return len(self._added) + len(self._removed)

    def changed(self, add: Iterable[Rule], remove: Iterable[Rule]) -> Rows:
        """Return the rows with ``remove`` taken out, then ``add`` put in (absent ones)."""
        base = self._base
        added = dict(self._added)
        removed = set(self._removed)
        for rule in remove:
            if rule in added:
                del added[rule]
            elif rule in base:
                removed.add(rule)
        for rule in add:
            if rule not in added and (rule not in base or rule in removed):
                added[rule] = None
        if len(added) + len(removed) > max(MIN_OVERLAY, len(base) // SHARE):
            gone = removed
            compacted = {r: None for r in base if r not in gone}
            compacted.update(added)
            return Rows(compacted)
        return Rows(base, added, frozenset(removed))
