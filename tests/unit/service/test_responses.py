"""The open-redirect guard."""

from __future__ import annotations

import pytest

from service.responses import safe_next_url


@pytest.mark.parametrize("target", ["/", "/admin/", "/reports?id=1&x=2", "/a/b#frag"])
def test_same_site_paths_are_kept(target: str) -> None:
    assert safe_next_url(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "//evil.example",
        "///evil.example",
        "https://evil.example/",
        "http:/evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "evil.example/",
        "/\t/evil.example",
        "/\r\n/evil",
        "/a\\b",
    ],
)
def test_anything_that_could_leave_the_site_is_refused(target: str | None) -> None:
    assert safe_next_url(target) is None
