"""The audit log through the API: every policy and account change, newest first."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask import request

from authz import AuditEntry
from service import params
from service.api import schemas
from service.api.views import bp
from service.api.views import ok
from service.users import engine


def entry_item(entry: AuditEntry) -> dict[str, Any]:
    """Return the JSON shape of an audit entry; rows as ``[ptype, *values]`` lists."""
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "source": entry.source,
        "action": entry.action,
        "added": [r.as_list() for r in entry.added],
        "removed": [r.as_list() for r in entry.removed],
        "forced": entry.forced,
        "revision": entry.revision,
        "detail": entry.detail,
    }


@bp.get("/audit")
def audit() -> Response:
    """List audit entries, filtered by actor and time (``since`` inclusive, ``until`` not)."""
    page, per_page = schemas.paging(request.args)
    since = schemas.instant(request.args.get("since"), "since")
    until = schemas.instant(request.args.get("until"), "until")
    policy = engine()
    revision = policy.revision
    # One entry more than the page tells whether another page follows, without a count.
    entries = policy.store.audit_entries(
        limit=per_page + 1,
        offset=(page - 1) * per_page,
        actor=params.text(request.args.get("actor"), "actor"),
        since=since,
        until=until,
    )
    return ok(
        {
            "revision": revision,
            "page": page,
            "per_page": per_page,
            "has_more": len(entries) > per_page,
            "items": [entry_item(e) for e in entries[:per_page]],
        }
    )
