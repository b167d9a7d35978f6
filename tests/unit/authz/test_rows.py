"""authz.rows: rows shared between snapshots behave exactly like a dict copied each time."""

from __future__ import annotations

import random

import pytest

import authz.rows
from authz.rows import Rows
from authz.rules import Rule


def rule(n: int) -> Rule:
    return Rule.of("p", f"role{n % 7}", f"/r/{n}", "GET", "allow")


@pytest.mark.parametrize("minimum", [2, 256])
@pytest.mark.parametrize("seed", range(4))
def test_rows_match_a_dict_copied_for_every_change(
    seed: int, minimum: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authz.rows, "MIN_OVERLAY", minimum)
    rng = random.Random(seed)
    model: dict[Rule, None] = dict.fromkeys(rule(n) for n in range(50))
    rows = Rows(dict(model))
    history = [(rows, dict(model))]
    for _ in range(200):
        remove = rng.sample(list(model), k=min(len(model), rng.randint(0, 3)))
        add = [rule(rng.randint(0, 120)) for _ in range(rng.randint(0, 3))]
        model = dict(model)
        for r in remove:
            model.pop(r, None)
        for r in add:
            model.setdefault(r, None)
        rows = rows.changed(add, remove)
        history.append((rows, dict(model)))
        assert list(rows) == list(model)  # policy order: a re-added row comes last
        assert len(rows) == len(model)
        probe = rule(rng.randint(0, 120))
        assert (probe in rows) == (probe in model)
    # Every earlier version is untouched by the changes built on it.
    for old, expected in history:
        assert list(old) == list(expected)


def test_the_overlay_is_compacted_once_it_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authz.rows, "MIN_OVERLAY", 3)
    rows = Rows(dict.fromkeys(rule(n) for n in range(10)))
    rows = rows.changed([rule(100)], [rule(0)])
    assert rows.overlay == 2
    rows = rows.changed([rule(101), rule(102)], [])
    assert rows.overlay == 0 and len(rows) == 12
    with pytest.raises(KeyError):
        rows[rule(0)]
    assert rows[rule(101)] is None
