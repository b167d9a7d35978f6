"""Change propagation between instances: a cheap revision poll in a daemon thread."""

from __future__ import annotations

import logging
import threading

from authz.engine import PolicyEngine
from authz.errors import AuthzError

log = logging.getLogger("authz.sync")


class RevisionPoller:
    """Reloads the engine whenever the stored policy revision moves.

    One small query per interval; the decisions themselves never touch the database.
    """

    def __init__(self, engine: PolicyEngine, interval: float = 0.5) -> None:
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start polling in a daemon thread (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="authz-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def poll_once(self) -> bool:
        """Check the revision once; return whether the policy was reloaded."""
        try:
            return self.engine.refresh()
        except AuthzError as e:
            log.warning("policy refresh failed, keeping revision in memory: %s", e)
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll_once()
