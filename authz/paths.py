"""Canonical (object, action) of a request, refusing paths the router could read differently.

The policy matches the path string; the router routes a decoded, possibly normalized
path. Wherever the two could disagree (an encoded slash, a dot segment, a backslash,
a NUL, an empty segment) the request is refused before any decision, so no policy row
can be bypassed by spelling a path another way.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from authz.errors import RequestTooLarge
from authz.errors import UnsafePath
from authz.patterns import MAX_VALUE

#: The longest path decided (longer ones get 414 before any pattern runs).
MAX_PATH = MAX_VALUE
#: The most segments a path may have.
MAX_SEGMENTS = 64
#: The longest method decided; the longest registered HTTP method has 17 characters.
MAX_METHOD = 32
#: A method is an HTTP token; these are the characters any real method uses.
_METHOD = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
#: Percent-escapes that decode to a separator, a dot, a backslash or a control character.
_RAW_FORBIDDEN = re.compile(r"%(2[fFeE]|5[cC]|[01][0-9a-fA-F]|7[fF])")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def canonical_action(method: str) -> str:
    """Return the action checked for a method: upper-case, with HEAD checked as GET.

    :raises UnsafePath: for a method that is too long or not a plain HTTP token; policy
        patterns never see one (a crafted method could otherwise feed a slow pattern).
    """
    if len(method) > MAX_METHOD:
        raise RequestTooLarge(f"the method is longer than {MAX_METHOD} characters")
    if not _METHOD.match(method):
        raise UnsafePath("the method is not a plain HTTP method name")
    method = method.upper()
    # HEAD runs the GET view, so it must be granted exactly when GET is.
    return "GET" if method == "HEAD" else method


def canonical_object(path: str, raw_path: str | None = None) -> str:
    """Return ``path`` unchanged when it is unambiguous, else raise UnsafePath.

    :param path: the decoded path the router will route (WSGI ``PATH_INFO``).
    :param raw_path: the path as sent on the wire, when the server provides it.
    """
    check_size(path)
    if raw_path is not None:
        raw = raw_path.split("?", 1)[0]
        if _RAW_FORBIDDEN.search(raw):
            raise UnsafePath("encoded slash, dot, backslash or control character in the path")
        # "%C0%AF" (an overlong "/") or "%FF" decodes to U+FFFD in the router and the
        # policy alike; refused, so that one resource never has several wire spellings.
        if not _utf8(raw):
            raise UnsafePath("the path is not valid UTF-8")
    if not path.startswith("/"):
        raise UnsafePath("the path must start with '/'")
    if _CONTROL.search(path):
        raise UnsafePath("control character in the path")
    if _SURROGATE.search(path):
        raise UnsafePath("the path is not valid UTF-8")
    if "\\" in path:
        raise UnsafePath("backslash in the path")
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            raise UnsafePath("dot segment in the path")
        if segment == "" and i != len(segments) - 1:
            raise UnsafePath("empty segment ('//') in the path")
    return path


def _utf8(raw: str) -> bool:
    """Whether a wire path (WSGI: bytes as latin-1 text) decodes as UTF-8, escapes and all."""
    try:
        data = raw.encode("latin-1")
    except UnicodeEncodeError:  # a server that hands over decoded text
        data = raw.encode("utf-8", "surrogatepass")
    try:
        unquote_to_bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_size(path: str) -> None:
    """Refuse a path longer than MAX_PATH or with more than MAX_SEGMENTS segments."""
    if len(path) > MAX_PATH:
        raise RequestTooLarge(f"the path is longer than {MAX_PATH} characters")
    if path.count("/") > MAX_SEGMENTS:
        raise RequestTooLarge(f"the path has more than {MAX_SEGMENTS} segments")
