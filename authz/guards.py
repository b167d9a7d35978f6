"""The lockout guard: no change may leave nobody able to open the policy editor."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from authz.errors import LockoutRefused
from authz.snapshot import Snapshot


@dataclass(frozen=True)
class LockoutGuard:
    """Refuses a change after which no active user may request ``path`` with ``method``."""

    path: str = "/admin/"
    method: str = "GET"

    def holders(self, snapshot: Snapshot, subjects: Iterable[str]) -> list[str]:
        """Return the subjects that may open the editor under this snapshot."""
        return [s for s in subjects if snapshot.decide(s, self.path, self.method).allowed]

    def check(
        self,
        before: Snapshot,
        after: Snapshot,
        subjects_before: Iterable[str],
        subjects_after: Iterable[str],
    ) -> None:
        """Raise LockoutRefused when the change removes the last editor-capable user."""
        # Only a change that takes away the last such user is refused: on a fresh
        # install nobody holds the editor yet, and refusing every change would lock
        # the operator out of setting it up.
        if self.holders(before, subjects_before) and not self.holders(after, subjects_after):
            raise LockoutRefused(
                f"refused: after this change no active user could {self.method} {self.path} "
                "(the policy editor); give another active user that access first"
            )
