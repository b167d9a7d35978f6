"""Process-wide operational counters: decisions, policy loads, logins.

Plain integers, read when metrics are scraped (the service exports them in Prometheus
format). Recording is on the hot path of every request, so it takes no lock: an
increment of a list element is one bytecode sequence with no thread switch inside it
in CPython, and a scrape reads values that are at worst one request old.
"""

from __future__ import annotations

import threading
from bisect import bisect_left

_lock = threading.Lock()
_values: dict[str, int | str] = {"decider": "none", "casbin_decisions": 0}

#: Outcomes of a decision, by index.
OUTCOMES = ("allow", "deny", "error")
ALLOW, DENY, ERROR = 0, 1, 2
#: Upper bounds (seconds) of the decision latency buckets: a decision takes microseconds.
DECISION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025)
#: Upper bounds (seconds) of the policy load duration buckets.
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Outcomes of a login attempt.
LOGIN_OUTCOMES = ("success", "failure", "throttled")


def count(name: str, by: int = 1) -> None:
    """Add to a counter."""
    with _lock:
        _values[name] = int(_values.get(name, 0)) + by


def gauge(name: str, value: int | str) -> None:
    """Set a gauge."""
    _values[name] = value


def snapshot() -> dict[str, int | str]:
    """Return a copy of every metric."""
    return dict(_values)


class Histogram:
    """Observations in buckets (``le`` semantics, the last bucket is +Inf) and their sum."""

    __slots__ = ("bounds", "buckets", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.total += value


class Decisions:
    """Decisions made by one source (the middleware, the API): counts and latency."""

    __slots__ = ("source", "counts", "latency")

    def __init__(self, source: str) -> None:
        self.source = source
        #: Decisions by outcome index (ALLOW, DENY, ERROR).
        self.counts = [0, 0, 0]
        self.latency = Histogram(DECISION_BUCKETS)

    def record(self, outcome: int, seconds: float) -> None:
        """Count one decision and how long it took."""
        self.counts[outcome] += 1
        latency = self.latency
        latency.buckets[bisect_left(latency.bounds, seconds)] += 1
        latency.total += seconds


class Loads:
    """Policy loads (start, reload, poll): how many succeeded or failed, and how long."""

    __slots__ = ("ok", "failed", "duration")

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.duration = Histogram(LOAD_BUCKETS)

    def record(self, ok: bool, seconds: float) -> None:
        """Count one load."""
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        self.duration.observe(seconds)


#: Decisions by the request middleware and by the decision API.
MIDDLEWARE = Decisions("middleware")
API = Decisions("api")
#: Decisions for reverse proxies (service.forward).
FORWARD = Decisions("forward")
DECISIONS = (MIDDLEWARE, API, FORWARD)
LOADS = Loads()
#: Login attempts by outcome (LOGIN_OUTCOMES).
LOGINS = dict.fromkeys(LOGIN_OUTCOMES, 0)


def login(outcome: str) -> None:
    """Count one login attempt: success, failure or throttled."""
    assert outcome in LOGINS, outcome  # a typo here would start a counter nobody exports
    LOGINS[outcome] += 1
