"""``/healthz`` (the process answers) and ``/readyz`` (this worker can decide, and is current).

Both are decided by the middleware like every request: the default policy lets anyone
GET them. Neither is exempt in code, so while a worker cannot decide at all (no policy
loaded, or the stored policy refused) both answer the middleware's 503.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import jsonify
from sqlalchemy.exc import SQLAlchemyError

from authz import PolicyEngine
from authz import PolicyStore

bp = Blueprint("health", __name__)


class DatabaseProbe:
    """Ask the database for its revision, waiting at most a timeout for the answer.

    The query runs in a daemon thread, at most one at a time: a database that accepts
    connections but never answers costs one stuck thread, not one per probe.
    """

    def __init__(self, store: PolicyStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._done: threading.Event | None = None
        self._result: dict[str, Any] = {}

    def revision(self, timeout: float) -> tuple[int | None, str]:
        """Return (database revision or None, "ok" or why not)."""
        with self._lock:
            if self._done is None or self._done.is_set():
                self._done, self._result = threading.Event(), {}
                worker = threading.Thread(
                    target=self._ask,
                    args=(self._done, self._result),
                    name="authz-ready-probe",
                    daemon=True,
                )
                worker.start()
            done, result = self._done, self._result
        if not done.wait(timeout):
            return None, f"no answer within {timeout:g} s"
        if "error" in result:
            return None, f"error: {result['error']}"
        return int(result["revision"]), "ok"

    def _ask(self, done: threading.Event, result: dict[str, Any]) -> None:
        try:
            result["revision"] = self.store.revisions()[0]
        except SQLAlchemyError as e:
            # The class only: the driver's text may name hosts and users.
            result["error"] = e.__class__.__name__
        except Exception as e:  # noqa: BLE001 - a probe reports, never raises
            result["error"] = e.__class__.__name__
        finally:
            done.set()


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive and serving (no database involved)."""
    return jsonify(status="alive", pid=os.getpid())


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Whether this worker is ready: database answers, policy loaded and current."""
    settings = current_app.config["AUTHZ"]
    engine: PolicyEngine = current_app.extensions["authz"]
    probe: DatabaseProbe = current_app.extensions["authz.ready_probe"]
    database_revision, database = probe.revision(settings.ready_timeout)
    snapshot = engine.snapshot if engine.loaded else None
    revision = snapshot.revision if snapshot is not None else None
    lag = 0.0
    if revision is not None and database_revision is not None and revision != database_revision:
        # Not current: for at most as long as since this worker last saw itself current.
        lag = round(time.monotonic() - engine.verified_at, 3)
    problems = []
    if database != "ok":
        problems.append(f"database: {database}")
    if snapshot is None:
        problems.append("policy not loaded")
    elif snapshot.refused is not None:
        problems.append("stored policy refused")
    if lag > settings.ready_max_lag:
        problems.append(f"{lag:g} s behind the database (limit {settings.ready_max_lag:g} s)")
    bad = snapshot.bad_rows if snapshot is not None else ()
    body = {
        "ready": not problems,
        "problems": problems,
        "pid": os.getpid(),
        "database": database,
        "policy_loaded": snapshot is not None,
        "revision": revision,
        "database_revision": database_revision,
        "lag_seconds": lag,
        "bad_rows_count": len(bad),
        # Ids and types only: the probe is public by default, and a reason can quote row
        # values (emails, paths). The admin page shows the rows and reasons.
        "bad_rows": [{"id": b.id, "ptype": b.rule.ptype} for b in bad],
        "refused": snapshot.refused if snapshot is not None else None,
    }
    return jsonify(body), 200 if not problems else 503


def init_app(app: Flask) -> None:
    """Serve /healthz and /readyz."""
    app.extensions["authz.ready_probe"] = DatabaseProbe(app.extensions["authz"].store)
    app.register_blueprint(bp)
