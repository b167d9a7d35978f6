"""authz.rules.Validator: validate() for many rows, with the same answers and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authz.errors import RuleError
from authz.model import PolicyModel
from authz.rules import Rule
from authz.rules import Validator
from authz.rules import validate

REPO = Path(__file__).resolve().parents[3]
MODEL = PolicyModel.from_file(REPO / "model.conf")

ROWS = [
    Rule.of("p", "user", "/home", "GET", "allow"),
    Rule.of("p", "user", "/home", "GET"),  # the effect left out: allow
    Rule.of("p", "alice@example.com", "/users/:id", "GET|POST", "deny"),
    Rule.of("p", "token:ci", "/api/*", ".*", "allow"),
    Rule.of("p", "Alice@example.com", "/x", "GET", "allow"),  # write it lower-case
    Rule.of("p", "user ", "/x", "GET", "allow"),
    Rule.of("p", "user", "x", "GET", "allow"),  # a path starts with "/"
    Rule.of("p", "user", "/x\n", "GET", "allow"),
    Rule.of("p", "user", "/x\u200b", "GET", "allow"),
    Rule.of("p", "user", "/x", "(A+)+$", "allow"),
    Rule.of("p", "user", "/x", "GET", "maybe"),
    Rule.of("p", "user", "/x", "GET", "allow", "extra"),
    Rule.of("p", "user", "/x"),
    Rule.of("p", "", "/x", "GET", "allow"),
    Rule.of("p", "/x", "/x", "GET", "allow"),  # a path is no subject
    Rule.of("p", "user", "/" + "a" * 300, "GET", "allow"),
    Rule.of("g", "alice@example.com", "admin"),
    Rule.of("g", "admin", "admin"),
    Rule.of("g", "admin", "Admin"),
    Rule.of("g", "user", "alice@example.com"),  # users cannot be inherited
    Rule.of("g", "admin"),
    Rule.of("q", "user", "/x", "GET", "allow"),
    Rule("p", ("user", None, "GET", "allow")),  # type: ignore[arg-type]  # a NULL column
]


def outcome(check: Any, rule: Rule) -> tuple[str, object]:
    try:
        return ("ok", check(rule))
    except RuleError as e:
        return ("error", str(e))
    except Exception as e:  # noqa: BLE001 - compared by type: both must raise the same
        return ("raised", type(e).__name__)


@pytest.mark.parametrize("rule", ROWS, ids=repr)
def test_each_row_as_validate(rule: Rule) -> None:
    validator = Validator(MODEL)
    expected = outcome(lambda r: validate(r, MODEL), rule)
    assert outcome(validator, rule) == expected
    # Asked again, from what it remembers, the answer is the same.
    assert outcome(validator, rule) == expected


def test_one_validator_for_every_row_in_any_order() -> None:
    validator = Validator(MODEL)
    for rule in [*ROWS, *reversed(ROWS), *ROWS]:
        assert outcome(validator, rule) == outcome(lambda r: validate(r, MODEL), rule), rule


def test_a_value_that_passed_in_one_field_is_checked_again_in_another() -> None:
    validator = Validator(MODEL)
    assert validator(Rule.of("p", "user", "/x", "GET", "allow")).values[0] == "user"
    # "user" passed as a subject; as a path it must still start with "/".
    with pytest.raises(RuleError, match="must start with '/'"):
        validator(Rule.of("p", "user", "user", "GET", "allow"))
    # "admin" passed as a role; as a member it may not be its own role.
    validator(Rule.of("g", "alice@example.com", "admin"))
    with pytest.raises(RuleError, match="cannot inherit from itself"):
        validator(Rule.of("g", "admin", "admin"))
