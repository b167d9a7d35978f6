"""authz.paths: the canonical object and action of a request, refusing ambiguous paths."""

from __future__ import annotations

import pytest

from authz.errors import UnsafePath
from authz.paths import canonical_action
from authz.paths import canonical_object


@pytest.mark.parametrize(
    "path",
    ["/", "/admin/", "/admin", "/users/42", "/static/app.css", "/a b", "/caf\u00e9", "/a.b/c..d"],
)
def test_unambiguous_paths_pass_unchanged(path: str) -> None:
    """A path the router and the policy read alike is returned as is."""
    assert canonical_object(path) == path


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/a/../admin", id="dotdot-middle"),
        pytest.param("/./x", id="dot-first"),
        pytest.param("/a/..", id="dotdot-last"),
        pytest.param("/a/.", id="dot-last"),
        pytest.param("/..", id="dotdot-only"),
        pytest.param("//admin", id="double-slash-first"),
        pytest.param("/admin//users", id="double-slash-middle"),
        pytest.param("/admin\\users", id="backslash"),
        pytest.param("\\admin", id="leading-backslash"),
        pytest.param("/admin\x00", id="nul"),
        pytest.param("/admin\n", id="newline"),
        pytest.param("/ad\tmin", id="tab"),
        pytest.param("/admin\x7f", id="del"),
        pytest.param("admin", id="relative"),
        pytest.param("", id="empty"),
        pytest.param("*", id="star"),
    ],
)
def test_ambiguous_paths_are_refused(path: str) -> None:
    """Dot segments, empty segments, backslashes, controls and relative paths raise UnsafePath."""
    with pytest.raises(UnsafePath):
        canonical_object(path)


@pytest.mark.parametrize(
    ("path", "raw_path"),
    [
        pytest.param("/a/b", "/a%2Fb", id="slash-upper"),
        pytest.param("/a/b", "/a%2fb", id="slash-lower"),
        pytest.param("/a\\b", "/a%5Cb", id="backslash-upper"),
        pytest.param("/a\\b", "/a%5cb", id="backslash-lower"),
        pytest.param("/a\x00", "/a%00", id="nul"),
        pytest.param("/a\n", "/a%0a", id="newline"),
        pytest.param("/a\x7f", "/a%7F", id="del"),
        pytest.param("/a/../admin", "/a/%2e%2e/admin", id="dotdot-lower"),
        pytest.param("/a/../admin", "/a/%2E%2E/admin", id="dotdot-upper"),
        pytest.param("/admin", "/%2e/admin", id="dot"),
        # Not UTF-8: the router and the policy read U+FFFD, several wire forms for one path.
        pytest.param("/a\ufffd\ufffd", "/a%C0%AF", id="overlong-slash"),
        pytest.param("/a\ufffd", "/a%FF", id="invalid-byte"),
        pytest.param("/a\ufffd", "/a%C3", id="truncated-sequence"),
        pytest.param("/a\ufffd", "/a\xff", id="raw-invalid-byte"),
    ],
)
def test_encoded_separators_on_the_wire_are_refused(path: str, raw_path: str) -> None:
    """An encoded slash, dot, backslash or control in the raw path raises UnsafePath."""
    with pytest.raises(UnsafePath):
        canonical_object(path, raw_path=raw_path)


@pytest.mark.parametrize(
    ("path", "raw_path"),
    [
        ("/a b", "/a%20b"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ("/search", "/search?q=%2F..%2F"),
        ("/admin/", "/admin/"),
        ("/caf\u00e9", "/caf\xc3\xa9"),  # UTF-8 sent unescaped, as WSGI hands it over
        ("/\u4e2d", "/\u4e2d"),  # a server that hands over decoded text (not WSGI)
    ],
)
def test_harmless_escapes_and_query_strings_pass(path: str, raw_path: str) -> None:
    """Escapes of ordinary characters, and anything in the query string, are fine."""
    assert canonical_object(path, raw_path=raw_path) == path


@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("GET", "GET"),
        ("get", "GET"),
        ("HEAD", "GET"),
        ("head", "GET"),
        ("Post", "POST"),
        ("DELETE", "DELETE"),
        ("options", "OPTIONS"),
    ],
)
def test_canonical_action(method: str, action: str) -> None:
    """Methods are upper-cased and HEAD is checked as GET."""
    assert canonical_action(method) == action
