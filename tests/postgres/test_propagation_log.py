"""The change log on PostgreSQL: concurrent writers on three instances, a listening fourth.

The listener applies each notified revision from the log; at the end it holds exactly
what a full load gives, having read every row only at its start.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from authz.engine import Change
from authz.engine import PolicyEngine
from authz.model import PolicyModel
from authz.rules import Rule
from authz.store import PolicyStore
from authz.sync import PostgresListener
from tests.postgres.conftest import REPO
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


@pytest.mark.parametrize(
    "effect",
    [
        "some(where (p.eft == allow)) && !some(where (p.eft == deny))",
        "priority(p.eft) || deny",
    ],
)
def test_a_follower_keeps_the_stored_row_order_after_a_rebased_staged_change(
    tmp_path: Path, effect: str, pg_engine_factory: EngineFactory
) -> None:
    """A staged change draws its row ids before it takes the lock; a write committed in
    between gets later ids. Applied in revision order, the log would put the staged rows
    after that write, where a full read puts them before it: the explaining row (and,
    under an order-dependent effect, the decision) would differ from the database's."""
    from authz.engine import STAGE_FROM

    text = (REPO / "model.conf").read_text()
    conf = tmp_path / "model.conf"
    conf.write_text(
        "\n".join(
            f"e = {effect}" if line.startswith("e = ") else line for line in text.splitlines()
        )
    )
    model = PolicyModel.from_file(conf)
    PolicyStore(pg_engine_factory()).create_schema()
    a, b, c = (instance(model, pg_engine_factory) for _ in range(3))
    between_effect = "deny" if effect.startswith("some") else "allow"
    between = Rule.of("p", "user", "/t/*", "GET", between_effect)
    bulk = [Rule.of("p", "bulk", f"/bulk/{i}", "GET", "allow") for i in range(STAGE_FROM)]
    original = a._commit_staged

    def with_a_write_in_between(*args: object, **kwargs: object) -> object:
        b.apply(Change.adding(between), actor="b", source="cli")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    a._commit_staged = with_a_write_in_between  # type: ignore[method-assign]
    a.apply(
        Change.adding(Rule.of("p", "user", "/t/:id", "GET", "deny"), *bulk),
        actor="a",
        source="cli",
    )
    c.refresh()
    fresh = instance(model, pg_engine_factory)
    mine, stored = c.decide("user", "/t/x", "GET"), fresh.decide("user", "/t/x", "GET")
    assert (mine.allowed, mine.rule) == (stored.allowed, stored.rule)
    assert c.rules() == fresh.rules()
