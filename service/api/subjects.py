"""Subjects: the roles any subject holds and the rules that apply to it.

A subject is a user's email, a role, ``anonymous`` or a service token's ``token:NAME``
(the default ``string`` converter takes the colon; only "/" ends the segment). The
answer comes from one policy snapshot, as a decision would.
"""

from __future__ import annotations

from flask import Response

from authz import views
from authz.snapshot import Snapshot
from service import users as accounts
from service.api import schemas
from service.api.policy import RULE
from service.api.policy import rule_item
from service.api.policy import rule_names
from service.api.views import bp
from service.api.views import ok
from service.users import engine


def read_subject(value: str) -> str:
    """The subject of the URL in its one spelling; another spelling is a 400 naming it.

    Werkzeug has already decoded the segment, so ``%20`` or ``%41`` arrive as a space or
    a capital letter, and are refused with the canonical spelling like any other.
    """
    return schemas.known_subject(value, "subject")


def effective_roles(snapshot: Snapshot, subject: str) -> list[str]:
    """Every role the subject holds, directly or through inheritance (sorted)."""
    return snapshot.roles_for(subject)


@bp.get("/subjects/<subject>/roles")
def subject_roles(subject: str) -> Response:
    """The subject's own roles (its g rows) and every role it holds through them."""
    subject = read_subject(subject)
    snapshot = engine().snapshot
    return ok(
        {
            "subject": subject,
            "revision": snapshot.revision,
            "direct": accounts.direct_roles(subject),
            "roles": effective_roles(snapshot, subject),
        }
    )


@bp.get("/subjects/<subject>/permissions")
def subject_permissions(subject: str) -> Response:
    """Every rule that applies to the subject: its own and its roles', in policy order."""
    subject = read_subject(subject)
    snapshot = engine().snapshot
    names = rule_names()
    at = names.index("subject") if "subject" in names else 0
    holders = [subject, *effective_roles(snapshot, subject)]
    if at == 0:  # the index knows rules by their first value
        rules = views.view(snapshot).rules_of(*holders)
    else:
        rules = [r for r in snapshot.rules if r.ptype == RULE and r.values[at] in holders]
    items = [rule_item(rule, names) for rule in rules]
    return ok({"subject": subject, "revision": snapshot.revision, "items": items})
