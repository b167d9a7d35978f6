"""Query and form parameters shared by the policy editor, the JSON API and the CLI.

One parser per kind of value (page numbers, dates, subjects), each bounded so that no
input reaches SQL or datetime arithmetic out of range: a bad value raises ``BadParam``
naming the field and the reason, which each surface turns into its own 400.
"""

from __future__ import annotations

import datetime as dt
import re

from authz.rules import MAX_VALUE_LENGTH
from authz.rules import is_user

#: The highest page number a list accepts: far beyond any real list, and small enough
#: that ``(page - 1) * per_page`` always fits in SQL's 64-bit OFFSET.
MAX_PAGE = 1_000_000
#: No ISO-8601 date-time is longer than this; a longer value is refused unread.
MAX_DATE_LENGTH = 64
_DIGITS = re.compile(r"[0-9]{1,18}\Z")


#: Rows per page of a listing: the default and the most one page may ask for.
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 200


class BadParam(ValueError):
    """A parameter is invalid; ``field`` names it and ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Invalid(ValueError):
    """Several parameters are invalid at once; ``errors`` lists each."""

    def __init__(self, errors: list[BadParam]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def number(value: str | None, field: str, *, default: int, maximum: int) -> int:
    """Return a whole number from 1 to ``maximum``; ``default`` when absent or empty."""
    if value is None or value == "":
        return default
    if not _DIGITS.match(value) or int(value) < 1:
        raise BadParam(field, "must be a whole number of at least 1")
    found = int(value)
    if found > maximum:
        raise BadParam(field, f"must be at most {maximum}")
    return found


def text(value: str | None, field: str, *, max_length: int = 255) -> str | None:
    """Return a trimmed free-text filter, None when absent or empty.

    Control characters are refused: PostgreSQL rejects a NUL in a query parameter, and no
    stored value holds one.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > max_length:
        raise BadParam(field, f"must be at most {max_length} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadParam(field, "must not contain control characters")
    return value


def page(value: str | None, field: str = "page") -> int:
    """Return a page number, counting from 1 (default 1), at most MAX_PAGE."""
    return number(value, field, default=1, maximum=MAX_PAGE)


def instant(value: str | None, field: str, *, end_of_day: bool = False) -> dt.datetime | None:
    """Return an ISO-8601 date or date-time as an aware UTC datetime; None when empty.

    A value without a zone is UTC; one with a zone is converted. With ``end_of_day``, a
    bare date means the end of that day (the next midnight); the end of the last day a
    datetime can hold means no bound at all.
    """
    if value is None or value == "":
        return None
    example = "e.g. 2026-01-31 or 2026-01-31T12:00:00+01:00"
    if len(value) > MAX_DATE_LENGTH:
        raise BadParam(field, f"must be an ISO-8601 date or date-time, {example}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadParam(field, f"must be an ISO-8601 date or date-time, {example}") from None
    try:
        # Converting to UTC can leave the range a datetime holds (0001-01-01 at +14:00).
        moment = parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    except OverflowError:
        raise BadParam(field, "is out of range once converted to UTC") from None
    if end_of_day and _is_date(value):
        try:
            return moment + dt.timedelta(days=1)
        except OverflowError:
            return None
    return moment


def _is_date(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def subject(value: str, field: str = "subject") -> str:
    """Return a subject (an email, a role, ``anonymous``) written in its one spelling.

    An email is lower-case with no surrounding spaces, as the policy stores it: a
    different spelling is refused with the canonical one, never folded silently, so
    what is decided is what the caller named. (authz.rules refuses the same spellings
    in policy rows.)
    """
    if not value or len(value) > MAX_VALUE_LENGTH:
        raise BadParam(field, f"must be 1 to {MAX_VALUE_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadParam(field, "must not contain control characters")
    folded = value.strip().lower()
    if folded != value and "@" in folded and is_user(folded):
        raise BadParam(field, f"write it as {folded}")
    if value != value.strip():
        raise BadParam(field, "has leading or trailing spaces")
    return value
