"""``/metrics``: the engine's counters (authz.metrics) in Prometheus' text format.

Requests are counted with plain integers (authz.metrics): a Prometheus counter takes a
lock per increment, and under gunicorn's multiprocess mode also writes a shared file,
several times the cost of the decision itself. The integers are copied into Prometheus
metrics when scraped, and, under gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` set, every
second by each worker into its own file, so a scrape answered by one worker sums all.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

import click
from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import disable_created_metrics
from prometheus_client import generate_latest
from prometheus_client import multiprocess

from authz import PolicyEngine
from authz import metrics

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)

#: Seconds between two copies of a worker's counters into its multiprocess file.
FLUSH_EVERY = 1.0


def multiprocess_dir() -> str | None:
    """The folder gunicorn's workers share their metrics in, or None (one process)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class MeasuredEngine(PolicyEngine):
    """The policy engine, counting its loads (start, reload, poll) and how long they take."""

    def load(self) -> None:
        """Load the policy as PolicyEngine does; count it, failed or not."""
        started = time.perf_counter()
        try:
            super().load()
        except BaseException:
            metrics.LOADS.record(False, time.perf_counter() - started)
            raise
        metrics.LOADS.record(True, time.perf_counter() - started)


class Exporter:
    """Prometheus metrics fed from authz.metrics and the engine; one per process."""

    def __init__(self) -> None:
        # A *_created series per counter doubles the output and tells Prometheus nothing.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if self.multiprocess else self.registry
        self.engine: PolicyEngine | None = None
        self.polling = False
        self._sent: dict[tuple[object, ...], float] = {}
        self._lock = threading.Lock()
        self.decisions = Counter(
            "authz_decisions",
            "Decisions by outcome (allow, deny, error) and source (middleware, api, forward).",
            ["source", "outcome"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "authz_decision_seconds",
            "Time to decide a request (middleware: path checks, session, decision).",
            ["source"],
            buckets=metrics.DECISION_BUCKETS,
            registry=registry,
        )
        self.loads = Counter(
            "authz_policy_loads",
            "Policy loads (start, reload after a change) by outcome (ok, failed).",
            ["outcome"],
            registry=registry,
        )
        self.load_seconds = Histogram(
            "authz_policy_load_seconds",
            "Time to load the policy from the database and build its snapshot.",
            buckets=metrics.LOAD_BUCKETS,
            registry=registry,
        )
        self.refreshes = Counter(
            "authz_policy_refreshes",
            "Catching up with other instances' writes: by the change log (incremental) "
            "or by reading every row (full).",
            ["kind"],
            registry=registry,
        )
        self.logins = Counter(
            "authz_logins",
            "Login attempts by outcome (success, failure, throttled).",
            ["outcome"],
            registry=registry,
        )

        self.auth_events = Counter(
            "authz_auth_events",
            "Authentication events (service.events) by kind.",
            ["kind"],
            registry=registry,
        )

        def gauge(name: str, doc: str) -> Gauge:
            # liveall: one value per live worker (label pid), since each holds its own.
            return Gauge(name, doc, registry=registry, multiprocess_mode="liveall")

        self.revision = gauge("authz_policy_revision", "Policy revision this worker decides on.")
        self.rules = gauge("authz_policy_rules", "Policy rows loaded in this worker.")
        self.bad_rows = gauge("authz_policy_bad_rows", "Stored rows that failed validation.")
        self.refused = gauge("authz_policy_refused", "1 when the stored policy is refused (503).")
        self.lag = gauge(
            "authz_policy_lag_seconds",
            "Seconds since this worker last confirmed it holds the database's revision.",
        )
        self._thread: threading.Thread | None = None

    def watch(self, engine: PolicyEngine, polling: bool) -> None:
        """Report on ``engine``; in multiprocess mode, start copying values every second."""
        self.engine = engine
        self.polling = polling
        if self.multiprocess:
            self._start()

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="authz-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY)
            try:
                self.flush()
            except Exception:  # metrics must never take a worker down
                log.exception("metrics not copied")

    def flush(self) -> None:
        """Copy the counters' growth since the last copy, and the engine's gauges."""
        with self._lock:
            for source in metrics.DECISIONS:
                for i, outcome in enumerate(metrics.OUTCOMES):
                    child = self.decisions.labels(source.source, outcome)
                    self._add(child, ("decisions", source.source, i), source.counts[i])
                self._histogram(
                    self.decision_seconds.labels(source.source),
                    ("latency", source.source),
                    source.latency,
                )
            self._add(self.loads.labels("ok"), ("loads", "ok"), metrics.LOADS.ok)
            self._add(self.loads.labels("failed"), ("loads", "failed"), metrics.LOADS.failed)
            self._histogram(self.load_seconds, ("load_seconds",), metrics.LOADS.duration)
            if self.engine is not None:
                engine_id = id(self.engine)  # counts start again with each engine
                for kind, total in self.engine.refreshes.items():
                    key = ("refreshes", engine_id, kind)
                    self._add(self.refreshes.labels(kind), key, total)
            for outcome, value in metrics.LOGINS.items():
                self._add(self.logins.labels(outcome), ("logins", outcome), value)
            for name, count in metrics.snapshot().items():
                if name.startswith("auth_event.") and isinstance(count, int):
                    kind = name.removeprefix("auth_event.")
                    self._add(self.auth_events.labels(kind), ("auth_events", kind), count)
            self._gauges()

    def _add(self, counter: Any, key: tuple[object, ...], total: float) -> None:
        delta = total - self._sent.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._sent[key] = total

    def _histogram(self, child: Any, key: tuple[object, ...], source: metrics.Histogram) -> None:
        # prometheus_client has no public call to add a bucket count other than one
        # observation at a time; its child keeps one value per bucket and one sum.
        for i, count in enumerate(source.buckets):
            self._add(child._buckets[i], (*key, i), count)
        self._add(child._sum, (*key, "sum"), source.total)

    def _gauges(self) -> None:
        engine = self.engine
        if engine is None or not engine.loaded:
            for g in (self.revision, self.rules, self.bad_rows, self.lag):
                g.set(float("nan"))
            self.refused.set(0)
            return
        snapshot = engine.snapshot
        self.revision.set(snapshot.revision)
        self.rules.set(len(snapshot.ruleset))  # not .rules: a tuple of every row
        self.bad_rows.set(len(snapshot.bad_rows))
        self.refused.set(1 if snapshot.refused is not None else 0)
        # Without the poll nothing propagates to this worker: no lag to speak of.
        self.lag.set(time.monotonic() - engine.verified_at if self.polling else 0.0)

    def render(self) -> bytes:
        """Return every metric in Prometheus' text format (all workers' in multiprocess mode)."""
        self.flush()
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


_exporter: Exporter | None = None
_exporter_lock = threading.Lock()


def exporter() -> Exporter:
    """The process's exporter (Prometheus metrics are registered once per process)."""
    global _exporter
    with _exporter_lock:
        if _exporter is None:
            _exporter = Exporter()
            if _exporter.multiprocess:
                # A worker's last second of counts, written as it exits.
                atexit.register(_exporter.flush)
        return _exporter


def _restart_after_fork() -> None:
    # gunicorn --preload forks workers from a process whose threads do not survive.
    if _exporter is not None and _exporter.multiprocess:
        _exporter._thread = None
        _exporter._start()


os.register_at_fork(after_in_child=_restart_after_fork)


@bp.get("/metrics")
def scrape() -> Response:
    """Every metric, for Prometheus (who may scrape is decided by the policy)."""
    exporter().watch(current_app.extensions["authz"], "authz.poller" in current_app.extensions)
    return Response(exporter().render(), mimetype=CONTENT_TYPE_LATEST)


def child_exit(server: object, worker: Any) -> None:
    """gunicorn hook (``child_exit``): forget a dead worker's per-worker gauges."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def init_app(app: Flask) -> None:
    """Serve /metrics and report on this app's engine."""
    app.register_blueprint(bp)
    if multiprocess_dir() is not None and click.get_current_context(silent=True) is not None:
        # A CLI command (db init, policy load) is no worker: its values must not join
        # the workers' files (they would show as a worker that never answers).
        return
    exporter().watch(app.extensions["authz"], "authz.poller" in app.extensions)
