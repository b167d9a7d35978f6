"""URL converters for path parameters: a route only ever sees the canonical spelling.

The policy decides on the request path as sent; a view acts on the resource its
parameters select. Were a view to normalize a parameter (an email's case, surrounding
spaces, a Unicode look-alike), ``/admin/users/BOSS@example.com`` would escape a deny row
written for ``/admin/users/boss@example.com`` and still act on that account. These
converters refuse every non-canonical spelling while the URL is matched, so the route
answers 404 and its view never runs: what is decided is what is served.

The refusal is the converter's ``regex``, so a respelled segment matches no route at all
(404). ``to_python`` checks again but cannot be the only check: Werkzeug turns its
ValidationError into a 405 when another route of the same path has other methods.

Werkzeug matches the URL before the app's authorization hook runs but raises the
routing error only at dispatch, after it: a request the policy denies still gets its
403 or login redirect; one it allows gets the 404.
"""

from __future__ import annotations

import re

from flask import Flask
from werkzeug.routing import BaseConverter
from werkzeug.routing import ValidationError

from authz.rules import EMAIL_PATTERN
from authz.rules import ROLE_NAME
from authz.rules import TOKEN_NAME
from service.users import is_canonical_email

#: A rule id as ``authz.Rule.id`` makes it: 16 lower-case hex digits.
RULE_ID = re.compile(r"[0-9a-f]{16}\Z")


class EmailConverter(BaseConverter):
    """An account's email exactly as stored: lower-case ASCII, no spaces, well formed."""

    regex = EMAIL_PATTERN

    def to_python(self, value: str) -> str:
        if not is_canonical_email(value):
            raise ValidationError()
        return value


class RoleConverter(BaseConverter):
    """A role name (``[a-z][a-z0-9_-]*``), never another spelling of one."""

    regex = ROLE_NAME.pattern.removesuffix(r"\Z")

    def to_python(self, value: str) -> str:
        if not ROLE_NAME.match(value):
            raise ValidationError()
        return value


class RuleIdConverter(BaseConverter):
    """A policy row id: 16 lower-case hex digits."""

    regex = RULE_ID.pattern.removesuffix(r"\Z")

    def to_python(self, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValidationError()
        return value


class TokenNameConverter(BaseConverter):
    """A service token's name, without ``token:`` and in no other spelling."""

    regex = TOKEN_NAME.pattern.removesuffix(r"\Z")

    def to_python(self, value: str) -> str:
        if not TOKEN_NAME.match(value):
            raise ValidationError()
        return value


#: Converter name -> class, as routes name them (``<email:email>``).
CONVERTERS: dict[str, type[BaseConverter]] = {
    "email": EmailConverter,
    "role": RoleConverter,
    "rule_id": RuleIdConverter,
    "token": TokenNameConverter,
}


def init_app(app: Flask) -> None:
    """Register the converters; before any blueprint, whose routes name them."""
    app.url_map.converters.update(CONVERTERS)
