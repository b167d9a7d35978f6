"""Canonical (object, action) of a request, refusing paths the router could read differently.

The policy matches the path string; the router routes a decoded, possibly normalized
path. Wherever the two could disagree (an encoded slash, a dot segment, a backslash,
a NUL, an empty segment) the request is refused before any decision, so no policy row
can be bypassed by spelling a path another way.
"""

from __future__ import annotations

import re

from authz.errors import UnsafePath

#: Percent-escapes that decode to a separator, a dot, a backslash or a control character.
_RAW_FORBIDDEN = re.compile(r"%(2[fFeE]|5[cC]|[01][0-9a-fA-F]|7[fF])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def canonical_action(method: str) -> str:
    """Return the action checked for a method: upper-case, with HEAD checked as GET."""
    method = method.upper()
    # HEAD runs the GET view, so it must be granted exactly when GET is.
    return "GET" if method == "HEAD" else method


def canonical_object(path: str, raw_path: str | None = None) -> str:
    """Return ``path`` unchanged when it is unambiguous, else raise UnsafePath.

    :param path: the decoded path the router will route (WSGI ``PATH_INFO``).
    :param raw_path: the path as sent on the wire, when the server provides it.
    """
    if raw_path is not None:
        raw = raw_path.split("?", 1)[0]
        if _RAW_FORBIDDEN.search(raw):
            raise UnsafePath("encoded slash, dot, backslash or control character in the path")
    if not path.startswith("/"):
        raise UnsafePath("the path must start with '/'")
    if _CONTROL.search(path):
        raise UnsafePath("control character in the path")
    if "\\" in path:
        raise UnsafePath("backslash in the path")
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            raise UnsafePath("dot segment in the path")
        if segment == "" and i != len(segments) - 1:
            raise UnsafePath("empty segment ('//') in the path")
    return path
