"""Decisions through the API: what the middleware would decide, and the rule that decided."""

from __future__ import annotations

import time
from typing import Any

from flask import Response
from flask import request

from authz import EngineUnavailable
from authz import UnsafePath
from authz import metrics
from authz.paths import canonical_action
from authz.paths import canonical_object
from service.api import schemas
from service.api.views import body
from service.api.views import bp
from service.api.views import ok
from service.users import engine

REQUEST_FIELDS = {
    "subject": schemas.Field(str),
    "path": schemas.Field(str),
    "method": schemas.Field(str),
}


def read_request(raw: Any, prefix: str = "") -> tuple[str, str, str]:
    """Return the (subject, object, action) the middleware would decide for a request."""
    data = schemas.read_object(raw, REQUEST_FIELDS, prefix=prefix, what=prefix or "the body")
    errors = []
    # Subjects are emails in their one spelling (lower-case, as the middleware takes
    # them), role names or anonymous; another spelling is refused, never folded.
    subject = data["subject"]
    try:
        subject = schemas.subject(subject, f"{prefix}subject")
    except schemas.Invalid as e:
        errors += e.errors
    obj = data["path"]
    try:
        # The middleware refuses these paths before any decision; so does this answer.
        obj = canonical_object(obj)
    except UnsafePath as e:
        errors.append(schemas.FieldError(f"{prefix}path", f"refused path: {e}"))
    try:
        act = canonical_action(schemas.method(data["method"], f"{prefix}method"))
    except schemas.Invalid as e:
        errors += e.errors
        act = ""
    if errors:
        raise schemas.Invalid(errors)
    return subject, obj, act


def decide_all(requests: list[tuple[str, str, str]]) -> tuple[int, list[dict[str, Any]]]:
    """Decide requests on one snapshot, as the engine decides for the middleware.

    One snapshot, so every answer and the revision reported come from the same policy.
    """
    started = time.perf_counter()
    try:
        snapshot = engine().snapshot
        answers = [snapshot.decide(*r).as_dict() for r in requests]
    except Exception as e:
        metrics.API.record(metrics.ERROR, time.perf_counter() - started)
        if isinstance(e, EngineUnavailable):
            raise
        # As in PolicyEngine.decide: a broken model fails closed (503).
        raise EngineUnavailable(f"the engine could not decide: {e}") from e
    each = (time.perf_counter() - started) / max(len(answers), 1)
    for answer in answers:
        metrics.API.record(metrics.ALLOW if answer["allowed"] else metrics.DENY, each)
    return snapshot.revision, answers


@bp.post("/decisions")
def decide() -> Response:
    """Decide one request: allowed or not, why, and the rule that decided."""
    revision, (decision,) = decide_all([read_request(request.get_json(silent=True))])
    return ok({**decision, "revision": revision})


@bp.post("/decisions/batch")
def decide_many() -> Response:
    """Decide up to MAX_BATCH requests at once, in order, against one policy snapshot."""
    raw = body({"requests": schemas.Field(list)})["requests"]
    if len(raw) > schemas.MAX_BATCH:
        raise schemas.Invalid(
            [schemas.FieldError("requests", f"at most {schemas.MAX_BATCH} requests per call")]
        )
    requests: list[tuple[str, str, str]] = []
    errors: list[schemas.FieldError] = []
    for i, item in enumerate(raw):
        try:
            requests.append(read_request(item, prefix=f"requests[{i}]."))
        except schemas.Invalid as e:
            errors += e.errors
    if errors:
        raise schemas.Invalid(errors, "some requests are invalid; none was decided")
    revision, decisions = decide_all(requests)
    return ok({"revision": revision, "decisions": decisions})
