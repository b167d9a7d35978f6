"""The decision log: nothing when off, every decision when full, some when sampled."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.decisionlog import DecisionLog

FIELDS = {
    "decision_id",
    "time",
    "subject",
    "object",
    "action",
    "allowed",
    "rule",
    "revision",
    "caller",
}


@pytest.fixture
def logs() -> Iterator[list[DecisionLog]]:
    """Logs made by a test, closed after it (their handlers sit on a shared logger)."""
    made: list[DecisionLog] = []
    yield made
    for log in made:
        log.close()


def make(logs: list[DecisionLog], *args: object, **kwargs: object) -> DecisionLog:
    log = DecisionLog(*args, **kwargs)  # type: ignore[arg-type]
    logs.append(log)
    return log


def write(log: DecisionLog, n: int = 1, **kwargs: object) -> list[str]:
    ids = []
    for i in range(n):
        decision_id = log.new_id()
        ids.append(decision_id)
        log.write(
            **{
                "decision_id": decision_id,
                "subject": "token:ci",
                "obj": f"/reports/{i}",
                "action": "GET",
                "allowed": True,
                "rule": ["p", "reader", "/reports/*", "GET", "allow"],
                "revision": 42,
                "caller": "token:ci",
                **kwargs,
            }
        )
    return ids


def lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_off_writes_nothing_and_opens_no_file(tmp_path: Path, logs: list[DecisionLog]) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make(logs, "off", 1.0, True, str(path))
    assert not log.enabled and not log.middleware
    write(log, 10)
    assert not path.exists()


def test_sample_of_zero_is_off(tmp_path: Path, logs: list[DecisionLog]) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make(logs, "sample", 0.0, True, str(path))
    assert not log.enabled and not log.middleware
    write(log, 10)
    assert lines(path) == []


def test_full_writes_one_json_line_per_decision_with_every_field(
    tmp_path: Path, logs: list[DecisionLog]
) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make(logs, "full", 0.01, False, str(path))
    assert log.enabled and not log.middleware  # the middleware's own need the flag
    ids = write(log, 3)
    write(log, 1, allowed=False, rule=None, caller="middleware", obj="/caf\u00e9")
    found = lines(path)
    assert len(found) == 4
    assert all(set(line) == FIELDS for line in found)
    assert [line["decision_id"] for line in found[:3]] == ids
    first = found[0]
    assert first["subject"] == "token:ci" and first["object"] == "/reports/0"
    assert first["action"] == "GET" and first["allowed"] is True
    assert first["rule"] == ["p", "reader", "/reports/*", "GET", "allow"]
    assert first["revision"] == 42 and first["caller"] == "token:ci"
    assert str(first["time"]).endswith("Z") and len(str(first["time"])) == 24
    last = found[3]
    assert last["allowed"] is False and last["rule"] is None and last["caller"] == "middleware"
    assert last["object"] == "/caf\u00e9"  # written as UTF-8, not escaped


def test_sample_writes_some_but_not_all(tmp_path: Path, logs: list[DecisionLog]) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make(logs, "sample", 0.5, False, str(path))
    ids = write(log, 400)
    found = lines(path)
    assert 0 < len(found) < 400
    # The lines written are whole decisions, in order, each with its own id.
    written = [line["decision_id"] for line in found]
    assert written == [i for i in ids if i in set(written)]


def test_ids_are_unique_and_differ_between_logs(logs: list[DecisionLog]) -> None:
    one, two = make(logs), make(logs)
    ids = [one.new_id() for _ in range(1000)] + [two.new_id() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert ids[0].split("-")[0] != ids[1000].split("-")[0]


def test_middleware_flag_needs_the_log_on(logs: list[DecisionLog], tmp_path: Path) -> None:
    assert make(logs, "full", 1.0, True, str(tmp_path / "a.jsonl")).middleware
    assert not make(logs, "off", 1.0, True).middleware


def test_closing_stops_writing(tmp_path: Path, logs: list[DecisionLog]) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make(logs, "full", 1.0, False, str(path))
    write(log, 2)
    log.close()
    other = make(logs, "full", 1.0, False, str(tmp_path / "other.jsonl"))
    write(other, 1)
    assert len(lines(path)) == 2
    assert len(lines(tmp_path / "other.jsonl")) == 1


def test_a_batch_of_lines_is_one_write_of_one_line_per_decision(
    tmp_path: Path, logs: list[DecisionLog]
) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make(logs, "full", 1.0, False, str(path))
    now = log.now()
    made = [
        log.line(
            decision_id=log.new_id(),
            subject=f"user{i}@example.com",
            obj="/",
            action="GET",
            allowed=i % 2 == 0,
            rule=None,
            revision=7,
            caller="token:ci",
            time=now,
        )
        for i in range(5)
    ]
    assert all(text is not None and "\n" not in text for text in made)
    log.write_lines([text for text in made if text is not None])
    found = lines(path)
    assert [line["subject"] for line in found] == [f"user{i}@example.com" for i in range(5)]
    assert all(set(line) == FIELDS and line["time"] == now for line in found)
    log.write_lines([])
    assert len(lines(path)) == 5


def test_sampled_lines_are_left_out_by_line(logs: list[DecisionLog], tmp_path: Path) -> None:
    log = make(logs, "sample", 0.5, False, str(tmp_path / "s.jsonl"))
    made = [
        log.line(
            decision_id=log.new_id(),
            subject="admin",
            obj="/",
            action="GET",
            allowed=True,
            rule=["p", "admin", "/", "GET", "allow"],
            revision=1,
            caller="middleware",
            time=log.now(),
        )
        for _ in range(400)
    ]
    kept = [text for text in made if text is not None]
    assert 0 < len(kept) < 400
