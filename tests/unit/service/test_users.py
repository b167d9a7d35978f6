"""The email rules of new accounts: one spelling each, every character fit for a URL segment."""

from __future__ import annotations

import pytest

from service.users import AccountError
from service.users import is_canonical_email
from service.users import normalize_email

CONTROL_OR_SPACE = "an email address cannot contain spaces or control characters"
NOT_ASCII = "only ASCII email addresses are supported"
URL_SPECIAL = "an email address cannot contain / ? # % or \\"
INVALID = "enter a valid email address"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("boss@example.com", "boss@example.com"),
        ("  Boss@Example.COM\t", "boss@example.com"),  # typed input is tidied up
        ("o'neil+tag@example.com", "o'neil+tag@example.com"),
        ("a.b-c_d=e~f!g$h&i*j@sub.example-1.org", "a.b-c_d=e~f!g$h&i*j@sub.example-1.org"),
        ("admin@localhost", "admin@localhost"),
        ("x@xn--bcher-kva.example", "x@xn--bcher-kva.example"),
    ],
)
def test_an_address_is_stored_stripped_and_lower_cased(given: str, stored: str) -> None:
    assert normalize_email(given) == stored
    assert is_canonical_email(stored)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "enter an email address"),
        ("   ", "enter an email address"),
        ("a\x01b@example.com", CONTROL_OR_SPACE),
        ("a\x00b@example.com", CONTROL_OR_SPACE),
        ("a\x7fb@example.com", CONTROL_OR_SPACE),
        ("a b@example.com", CONTROL_OR_SPACE),
        ("a\tb@example.com", CONTROL_OR_SPACE),
        ("a\u200bb@example.com", CONTROL_OR_SPACE),  # zero-width space: not printable
        ("a\u00a0b@example.com", CONTROL_OR_SPACE),
        ("a/b@example.com", URL_SPECIAL),
        ("a?b@example.com", URL_SPECIAL),
        ("a#b@example.com", URL_SPECIAL),
        ("a%62@example.com", URL_SPECIAL),
        ("a\\b@example.com", URL_SPECIAL),
        ("jos\u00e9@example.com", NOT_ASCII),
        ("boss@b\u00fccher.example", NOT_ASCII),
        # str.lower() maps these to ASCII: accepted, they would be a second "kofi@...".
        ("\u212aofi@example.com", NOT_ASCII),
        ("\u0130nfo@example.com", NOT_ASCII),
        ("\uff42oss@example.com", NOT_ASCII),  # fullwidth b
        ("\ufb01sh@example.com", NOT_ASCII),  # the fi ligature
        ("not-an-email", INVALID),
        ("a@b@example.com", INVALID),
        ("@example.com", INVALID),
        ("boss@", INVALID),
        ("boss@example.com.", INVALID),  # the root-dot spelling of the same domain
        (".boss@example.com", INVALID),
        ("bo..ss@example.com", INVALID),
        ("boss.@example.com", INVALID),
        ("boss@-example.com", INVALID),
        ("boss@example..com", INVALID),
        ('"boss"@example.com', INVALID),
        ("bo{s}s@example.com", INVALID),  # atext, but a URL would have to escape it
        ("bo;ss@example.com", INVALID),
        ("a" * 250 + "@example.com", INVALID),
    ],
)
def test_an_address_that_is_not_one_or_does_not_fit_a_url_is_refused(
    given: str, message: str
) -> None:
    with pytest.raises(AccountError) as refused:
        normalize_email(given)
    assert refused.value.message.startswith(message)
    assert refused.value.field == "email"
    assert not is_canonical_email(given)


@pytest.mark.parametrize(
    "spelling",
    ["Boss@example.com", " boss@example.com", "boss@example.com ", "boss@EXAMPLE.com"],
)
def test_only_the_stored_spelling_is_canonical(spelling: str) -> None:
    assert normalize_email(spelling) == "boss@example.com"
    assert not is_canonical_email(spelling)
