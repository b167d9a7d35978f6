"""The lockout guard: no change may leave nobody able to open the policy editor."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from dataclasses import dataclass

from authz.errors import LockoutRefused
from authz.snapshot import Snapshot


@dataclass(frozen=True)
class LockoutGuard:
    """Refuses a change after which no active user may request ``path`` with ``method``."""

    path: str = "/admin/"
    method: str = "GET"

    def holds(self, snapshot: Snapshot, subject: str) -> bool:
        """Whether ``subject`` may open the editor under ``snapshot``."""
        return snapshot.decide(subject, self.path, self.method).allowed

    def holders(self, snapshot: Snapshot, subjects: Iterable[str]) -> list[str]:
        """Return the subjects that may open the editor under this snapshot."""
        return [s for s in subjects if self.holds(snapshot, s)]

    def check(
        self,
        before: Snapshot,
        after: Snapshot,
        *,
        active: Callable[[], Iterable[str]],
        is_active: Callable[[str], bool],
        leaving: Collection[str] = (),
        witness: str | None = None,
    ) -> str | None:
        """Refuse a change that takes the editor from its last active holder.

        Return an active subject who holds the editor after the change (the witness to
        try first next time), or None when nobody holds it before or after. The cost is
        one decision and one lookup while the last witness keeps the editor; only when it
        loses it are all active subjects read.

        :param active: the active subjects after the change (a full read; rarely called).
        :param is_active: whether one subject is active after the change (cheap).
        :param leaving: subjects the change deactivates (active before it, not after).
        :param witness: a subject that held the editor when last checked.
        :raises LockoutRefused: the change removes the last editor-capable user.
        """
        if (
            witness is not None
            and witness not in leaving
            and self.holds(after, witness)
            and is_active(witness)
        ):
            return witness
        subjects = list(active())
        for subject in subjects:
            if subject not in leaving and self.holds(after, subject):
                return subject
        # Only a change that takes away the last such user is refused: on a fresh
        # install nobody holds the editor yet, and refusing every change would lock
        # the operator out of setting it up.
        if self.holders(before, [*subjects, *leaving]):
            raise LockoutRefused(
                f"refused: after this change no active user could {self.method} {self.path} "
                "(the policy editor); give another active user that access first"
            )
        return None
