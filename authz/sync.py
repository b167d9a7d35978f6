"""Change propagation between instances.

A cheap revision poll in a daemon thread works on every database; on PostgreSQL a
LISTEN thread also wakes each instance the moment a write commits (the writer's NOTIFY
travels in its own transaction, so it is delivered exactly when the change is visible).
"""

from __future__ import annotations

import logging
import threading
import time

from authz.engine import PolicyEngine
from authz.errors import AuthzError

log = logging.getLogger("authz.sync")


class _Worker:
    """A daemon thread that can be started, stopped and started again."""

    name = "authz-worker"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5) -> None:
        """Stop the thread and wait for it (at most ``timeout`` seconds; None: until it
        has stopped, which a process about to fork needs: see service.before_fork)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        raise NotImplementedError


class RevisionPoller(_Worker):
    """Reloads the engine whenever the stored policy revision moves.

    One small query per interval; the decisions themselves never touch the database.
    """

    name = "authz-poller"

    def __init__(self, engine: PolicyEngine, interval: float = 0.5) -> None:
        super().__init__()
        self.engine = engine
        self.interval = interval

    def poll_once(self) -> bool:
        """Check the revision once; return whether the policy was reloaded."""
        try:
            return self.engine.refresh()
        except AuthzError as e:
            log.warning("policy refresh failed, keeping revision in memory: %s", e)
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception:  # the poll is the safety net: it never dies, whatever failed
                log.exception("policy refresh failed unexpectedly; polling on")


#: The PostgreSQL channel policy and session-ending writes notify.
CHANNEL = "authz_policy"


class PostgresListener(_Worker):
    """Refreshes the engine as soon as another instance's write commits (PostgreSQL).

    Keeps one connection of its own in LISTEN mode; reconnects after a failure. The
    revision poll stays on as the safety net for notifications lost while reconnecting.
    """

    name = "authz-listener"

    def __init__(
        self, engine: PolicyEngine, *, reconnect_after: float = 1.0, check_every: float = 5.0
    ) -> None:
        super().__init__()
        self.engine = engine
        self.reconnect_after = reconnect_after
        #: Seconds of quiet after which the connection is asked whether it still answers:
        #: a silent server or a dead middlebox would otherwise keep us waiting forever.
        self.check_every = check_every
        self.listening = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as e:  # noqa: BLE001 - any failure: wait, reconnect
                self.listening.clear()
                log.warning("policy listener lost its connection (%s); reconnecting", e)
                self._stop.wait(self.reconnect_after)

    def _listen(self) -> None:
        raw = self.engine.store.engine.raw_connection()
        try:
            connection = raw.driver_connection
            connection.autocommit = True  # type: ignore[union-attr]
            connection.execute(f"LISTEN {CHANNEL}")  # type: ignore[union-attr]
            self.engine.refresh()  # catch up on anything committed before LISTEN
            self.listening.set()
            heard = time.monotonic()
            while not self._stop.is_set():
                for _note in connection.notifies(timeout=0.5):  # type: ignore[union-attr]
                    heard = time.monotonic()
                    try:
                        self.engine.refresh()
                    except AuthzError as e:
                        log.warning("policy refresh after a notification failed: %s", e)
                if time.monotonic() - heard > self.check_every:
                    # Bounded by the connection's own deadline (authz.connections): a
                    # silent server raises here and we reconnect.
                    connection.execute("SELECT 1")  # type: ignore[union-attr]
                    heard = time.monotonic()
        finally:
            self.listening.clear()
            raw.invalidate()  # never hand a LISTENing connection back to the pool
