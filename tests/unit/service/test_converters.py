"""The URL converters: a path parameter matches only in the spelling its view acts on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map
from werkzeug.routing import Rule as UrlRule

from authz import Rule
from service.converters import CONVERTERS
from service.users import EMAIL_PATTERN
from service.users import AccountError
from service.users import normalize_email

ROUTES = Map(
    [
        UrlRule("/users/<email:email>", endpoint="user"),
        UrlRule("/users/<email:email>/active", endpoint="active", methods=["GET", "POST"]),
        UrlRule("/roles/<role:role>", endpoint="role"),
        UrlRule("/rules/<rule_id:rule_id>", endpoint="rule", methods=["GET"]),
        UrlRule("/rules/<rule_id:rule_id>", endpoint="rule_replace", methods=["PUT"]),
    ],
    converters=CONVERTERS,
)
RULE = Rule.of("p", "user", "/", "GET", "allow")


def match(path: str, method: str = "GET") -> tuple[str, dict[str, str]] | None:
    try:
        return ROUTES.bind("localhost").match(path, method=method)  # type: ignore[return-value]
    except NotFound:
        return None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/users/boss@example.com", ("user", {"email": "boss@example.com"})),
        ("/users/Boss@example.com", None),
        ("/users/ boss@example.com", None),
        ("/users/boss@example.com.", None),
        ("/users/\u212aofi@example.com", None),
        ("/roles/admin", ("role", {"role": "admin"})),
        ("/roles/Admin", None),
        ("/roles/admin ", None),
        ("/roles/\uff41dmin", None),
        (f"/rules/{RULE.id}", ("rule", {"rule_id": RULE.id})),
        (f"/rules/{RULE.id.upper()}", None),
        (f"/rules/{RULE.id} ", None),
        (f"/rules/{RULE.id}0", None),
        (f"/rules/{RULE.id[:-1]}", None),
    ],
)
def test_only_the_canonical_spelling_matches(
    path: str, expected: tuple[str, dict[str, str]] | None
) -> None:
    assert match(path) == expected


def test_a_respelled_id_is_not_found_for_every_method_not_method_not_allowed() -> None:
    # A ValidationError from to_python alone would make this a 405 (the GET route of
    # the same path has other methods); the converter's regex makes it no match at all.
    assert match(f"/rules/{RULE.id}", "PUT") == ("rule_replace", {"rule_id": RULE.id})
    assert match(f"/rules/{RULE.id.upper()}", "PUT") is None


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.from_regex(EMAIL_PATTERN, fullmatch=True))
def test_every_accepted_address_routes_back_to_itself_unescaped(email: str) -> None:
    """So each account's pages can be reached: the built URL needs no escape and matches."""
    try:
        stored = normalize_email(email)
    except AccountError:
        return  # too long
    path = ROUTES.bind("localhost").build("active", {"email": stored})
    assert path == f"/users/{stored}/active"  # every character sits in the URL as it is
    assert match(path, "POST") == ("active", {"email": stored})


#: A valid address with one character put in somewhere: an upper-case letter, a space,
#: a look-alike, a control character, a dot...
NEAR_ADDRESSES = st.tuples(
    st.from_regex(EMAIL_PATTERN, fullmatch=True), st.integers(0, 64), st.characters()
).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :])


@settings(max_examples=500, derandomize=True, deadline=None)
@given(NEAR_ADDRESSES.filter(lambda s: "/" not in s))
def test_whatever_the_email_converter_matches_is_stored_as_it_is(segment: str) -> None:
    found = match(f"/users/{segment}")
    if found is not None:
        assert normalize_email(segment) == segment == found[1]["email"]
