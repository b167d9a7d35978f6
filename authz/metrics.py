"""Process-wide engine metrics: which decider serves, how often Casbin was asked."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_values: dict[str, int | str] = {"decider": "none", "casbin_decisions": 0}


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
