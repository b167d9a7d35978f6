"""Input validation for the JSON API: bodies, fields, revisions, paging and dates.

Pure functions over already-parsed values, so every rule here is testable without a
request. A bad input raises ``Invalid`` naming each bad field; the blueprint turns it
into a 400 problem document with an ``errors`` list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict

from authz.rules import ANONYMOUS
from authz.rules import EMAIL_PATTERN
from authz.rules import MAX_VALUE_LENGTH
from authz.rules import ROLE_NAME
from authz.rules import TOKEN_NAME
from authz.rules import TOKEN_PREFIX
from authz.rules import is_role
from authz.rules import is_token
from authz.rules import is_user
from service import params

#: Rows per page when the client does not say, and the most it may ask for.
DEFAULT_PER_PAGE = params.DEFAULT_PER_PAGE
MAX_PER_PAGE = params.MAX_PER_PAGE
#: The largest revision a client may name (SQL's BIGINT holds it).
MAX_REVISION = 2**62
#: The most requests one batch decision call may carry.
MAX_BATCH = 1000
#: An HTTP method is a token (RFC 9110, section 5.6.2).
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_DIGITS = re.compile(r"[0-9]{1,18}\Z")
#: A subject already in its one spelling: an email, a role name (anonymous is one) or
#: token:NAME, as authz.rules spells each; one match instead of three.
_SUBJECT = re.compile(
    "(?:"
    + "|".join(
        (
            EMAIL_PATTERN,
            ROLE_NAME.pattern.removesuffix(r"\Z"),
            re.escape(TOKEN_PREFIX) + TOKEN_NAME.pattern.removesuffix(r"\Z"),
        )
    )
    + r")\Z"
)


@dataclass(frozen=True)
class FieldError:
    """One bad input: the field's API name (None for the body as a whole) and why."""

    field: str | None
    message: str

    def as_dict(self) -> dict[str, str | None]:
        """Return the JSON shape of one entry of a problem's ``errors`` list."""
        return {"field": self.field, "message": self.message}


class Invalid(Exception):
    """The request's input is invalid; ``errors`` names every bad field."""

    def __init__(self, errors: list[FieldError], detail: str = "the request is invalid") -> None:
        super().__init__(detail)
        self.errors = errors
        self.detail = detail


@dataclass(frozen=True)
class Field:
    """The expected type of one body field and whether it must be present."""

    kind: type
    required: bool = True


_KIND_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def read_object(
    raw: Any, fields: Mapping[str, Field], *, prefix: str = "", what: str = "the body"
) -> dict[str, Any]:
    """Return ``raw`` when it is a JSON object with exactly the expected fields and types.

    Every problem is collected, so the client learns about all bad fields at once.
    Unknown fields are refused: a misspelt field must not be silently ignored.
    """
    if not isinstance(raw, dict):
        raise Invalid(
            [FieldError(prefix.rstrip(".") or None, "must be a JSON object")],
            f"{what} must be a JSON object (Content-Type: application/json)",
        )
    errors = [
        FieldError(f"{prefix}{name}", "is not a known field") for name in raw if name not in fields
    ]
    for name, spec in fields.items():
        if name not in raw:
            if spec.required:
                errors.append(FieldError(f"{prefix}{name}", "is required"))
            continue
        value = raw[name]
        # bool is an int to Python, never to a client.
        if not isinstance(value, spec.kind) or isinstance(value, bool):
            errors.append(FieldError(f"{prefix}{name}", f"must be {_KIND_NAMES[spec.kind]}"))
    if errors:
        raise Invalid(errors)
    return dict(raw)


def revision(value: Any, field: str = "revision") -> int:
    """Return a policy revision from a body (an integer) or a query string (digits)."""
    if isinstance(value, str) and _DIGITS.match(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REVISION:
        raise Invalid(
            [FieldError(field, "must be the policy revision the row was read at")],
            "a revision is a whole number from 0",
        )
    return value


def positive(value: str | None, field: str, default: int, maximum: int | None = None) -> int:
    """Return a query-string integer of at least 1 (and at most ``maximum``)."""
    try:
        return params.number(
            value, field, default=default, maximum=maximum if maximum is not None else 10**18
        )
    except params.BadParam as e:
        raise Invalid([FieldError(e.field, e.message)]) from None


def paging(args: Mapping[str, str]) -> tuple[int, int]:
    """Return (page, per_page) from the query string; pages count from 1 up to MAX_PAGE."""
    errors: list[FieldError] = []
    page = per_page = 0
    try:
        page = positive(args.get("page"), "page", 1, params.MAX_PAGE)
    except Invalid as e:
        errors += e.errors
    try:
        per_page = positive(args.get("per_page"), "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    except Invalid as e:
        errors += e.errors
    if errors:
        raise Invalid(errors)
    return page, per_page


def subject(value: str, field: str = "subject") -> str:
    """Return a subject in its one spelling (an email lower-case), or raise Invalid."""
    try:
        return params.subject(value, field)
    except params.BadParam as e:
        raise Invalid([FieldError(e.field, e.message)]) from None


def is_known_subject(value: str) -> bool:
    """Whether ``value`` is an email, a role name or token:NAME in its one spelling."""
    return _SUBJECT.match(value) is not None


def known_subject(value: str, field: str = "subject") -> str:
    """Return a subject the policy can name: an email, a role, anonymous or token:NAME.

    Any other spelling is refused, never folded: ``USER@Example.com``, ``Admin`` or
    ``TOKEN:ci`` would otherwise be decided as a subject nobody is (a deny that looks
    like an answer about someone else), so the refusal names the one spelling.
    """
    if len(value) <= MAX_VALUE_LENGTH and is_known_subject(value):
        return value  # the common case, checked once
    value = subject(value, field)
    if is_user(value) or is_role(value) or is_token(value):
        return value
    folded = value.lower()
    if folded != value and (is_user(folded) or is_role(folded) or is_token(folded)):
        raise Invalid([FieldError(field, f"write it as {folded}")])
    raise Invalid([FieldError(field, f"must be an email, a role name, {ANONYMOUS} or token:NAME")])


def method(value: str, field: str = "method") -> str:
    """Return an HTTP method name, or raise Invalid when it is not one."""
    if not _METHOD.match(value):
        raise Invalid([FieldError(field, "must be an HTTP method name, e.g. GET")])
    return value


def choice(value: str | None, field: str, allowed: tuple[str, ...]) -> str | None:
    """Return ``value`` when it is one of ``allowed`` (or empty: None)."""
    if value is None or value == "":
        return None
    if value not in allowed:
        raise Invalid([FieldError(field, f"must be one of {', '.join(allowed)}")])
    return value


#: The spellings of a yes/no query parameter (``?dry_run=1``); anything else is refused,
#: so that a misspelt "yes" never turns a dry run into a write.
FLAGS = {"1": True, "true": True, "0": False, "false": False, "": False}


def flag(args: MultiDict[str, str], name: str) -> bool:
    """Return a yes/no query parameter (absent: no); Invalid for any other spelling.

    Given twice, it is refused: a client and a proxy reading different copies of
    ``dry_run`` would disagree about whether a request writes.
    """
    values = args.getlist(name)
    if not values:
        return False
    if len(values) > 1:
        raise Invalid([FieldError(name, "give it once")])
    if values[0] not in FLAGS:
        raise Invalid([FieldError(name, "must be 1 or 0")])
    return FLAGS[values[0]]
