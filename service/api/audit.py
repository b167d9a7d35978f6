"""The audit log through the API: every policy and account change, newest first."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask import request

from authz import AuditEntry
from service import editing
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
    """List audit entries, filtered by actor and time, newest first.

    ``since`` is inclusive; ``until`` is exclusive for a date-time and covers the whole
    day for a bare date (as in the editor: one parser, service.editing.AuditQuery).
    """
    query = editing.AuditQuery.parse(request.args)
    revision = engine().revision
    entries, more = query.entries()
    return ok(
        {
            "revision": revision,
            "page": query.page,
            "per_page": query.per_page,
            "has_more": more,
            "items": [entry_item(e) for e in entries],
        }
    )
