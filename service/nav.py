"""Navigation the policy allows: templates ask the engine before they show a link.

Every link, button and form that leads somewhere is shown only when the engine would let
the current subject make that request (``{% if may('GET', url_for('admin.rules')) %}``):
a plain user sees no Admin link, because the policy would refuse it, not because a
template names a role. The decisions come from the in-memory snapshot, are cached for the
request, and fail closed: when the engine cannot decide, the link is hidden.
"""

from __future__ import annotations

from urllib.parse import unquote

from flask import Flask
from flask import current_app
from flask import g
from flask import request

from authz import AuthzError
from authz import PolicyEngine
from authz.paths import canonical_action
from authz.paths import canonical_object
from service.middleware import current_subject

#: ``g`` attribute holding this request's decisions, keyed by (method, path).
_CACHE = "authz_nav_decisions"


def subject() -> str:
    """The subject the middleware decided this request for.

    A bearer token's ``token:NAME``, else the logged-in account (its email once
    verified, the default role until then), else ``anonymous``: the same order as
    :func:`service.middleware.make_subject_of`, read from what it stored.
    """
    decided = g.get("authz_subject")
    if isinstance(decided, str):
        return decided
    token = g.get("authz_token")
    if token is not None:
        return str(token.subject)
    return current_subject()


def _object(path: str) -> str:
    """The object the middleware would decide for a link to ``path`` (no query, no root)."""
    raw = path.split("?", 1)[0].split("#", 1)[0]
    root = request.script_root
    if root and raw.startswith(root + "/"):
        raw = raw[len(root) :]
    # url_for quotes what a URL cannot carry; the router, and so the policy, sees it
    # decoded. An escape the middleware would refuse (an encoded slash) hides the link.
    return canonical_object(unquote(raw), raw)


def may(method: str, path: str) -> bool:
    """Whether the current subject may request ``method path``; False when undecidable."""
    cache: dict[tuple[str, str], bool] = g.setdefault(_CACHE, {})
    key = (method, path)
    allowed = cache.get(key)
    if allowed is None:
        engine: PolicyEngine = current_app.extensions["authz"]
        try:
            allowed = engine.decide(subject(), _object(path), canonical_action(method)).allowed
        except AuthzError as e:
            # Fail closed: a link the engine cannot decide on is not offered (the request
            # itself would be refused with 503, or 400 for a path it will not decide).
            current_app.logger.debug("navigation: %s %s undecided: %s", method, path, e)
            allowed = False
        cache[key] = allowed
    return allowed


def current(path: str) -> str | None:
    """The ``aria-current`` value of a navigation link to ``path``.

    ``page`` on the link to this very page; ``true`` on the link to the section it is
    in (``/admin/rules`` while editing a rule); None otherwise. The home page ``/`` is
    nobody's section.
    """
    here = request.path
    target = _object_or_none(path)
    if target is None:
        return None
    if here == target:
        return "page"
    section = target.rstrip("/") + "/"
    if section != "/" and here.startswith(section):
        return "true"
    return None


def _object_or_none(path: str) -> str | None:
    try:
        return _object(path)
    except AuthzError:
        return None


def init_app(app: Flask) -> None:
    """Make ``may`` and ``nav_current`` available to every template."""
    app.jinja_env.globals.update(may=may, nav_current=current)
