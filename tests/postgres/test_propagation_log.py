"""The change log on PostgreSQL: concurrent writers on three instances, a listening fourth.

The listener applies each notified revision from the log; at the end it holds exactly
what a full load gives, having read every row only at its start.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from authz.engine import Change
from authz.engine import PolicyEngine
from authz.model import PolicyModel
from authz.rules import Rule
from authz.store import PolicyStore
from authz.sync import PostgresListener
from tests.postgres.conftest import EngineFactory

pytestmark = pytest.mark.postgres


def instance(model: PolicyModel, factory: EngineFactory) -> PolicyEngine:
    engine = PolicyEngine(model, PolicyStore(factory()))
    engine.load()
    return engine


def wait_for(condition: object, seconds: float = 20.0) -> bool:
    """Poll ``condition()`` until true; False after ``seconds`` (a hang, not a timing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_concurrent_writers_reach_a_listener_as_changes(
    engine: PolicyEngine, model: PolicyModel, pg_engine_factory: EngineFactory
) -> None:
    writers = [engine, instance(model, pg_engine_factory), instance(model, pg_engine_factory)]
    follower = instance(model, pg_engine_factory)
    listener = PostgresListener(follower)
    listener.start()
    try:
        assert listener.listening.wait(10)
        pool = [Rule.of("p", "user", f"/c/{i}", "GET", "allow") for i in range(10)]
        errors: list[BaseException] = []

        def write(writer: PolicyEngine, seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(15):
                    add = tuple(rng.sample(pool, 2))
                    remove = tuple(rng.sample(pool, 2))
                    writer.apply(Change(add=add, remove=remove), actor="t", source="api")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=write, args=(w, i)) for i, w in enumerate(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        revision = engine.store.revision()
        assert wait_for(lambda: follower.revision == revision)
    finally:
        listener.stop()
    full = instance(model, pg_engine_factory)
    assert sorted(follower.rules()) == sorted(full.rules())
    assert follower.refreshes["full"] == 0 and follower.refreshes["incremental"] > 0
    for rule in pool:
        request = (rule.values[0], rule.values[1], "GET")
        assert follower.decide(*request) == full.decide(*request)
