"""The application's own pages: home and the admin landing page."""

from __future__ import annotations

from flask import Blueprint
from flask import render_template

from authz import metrics
from service import users
from service.middleware import current_subject

bp = Blueprint("pages", __name__)


@bp.route("/")
def home() -> str:
    """The home page, for any logged-in user (by the default policy)."""
    subject = current_subject()
    roles = users.engine().roles_for(subject)
    if "@" not in subject:  # an unverified account is decided as the default role itself
        roles = [subject, *roles]
    return render_template("home.html", roles=roles)


@bp.route("/admin/")
def admin() -> str:
    """The admin landing page, for admins (by the default policy)."""
    engine = users.engine()
    return render_template(
        "admin.html",
        revision=engine.revision,
        decider=engine.snapshot.kind,
        decider_reason=engine.snapshot.decider_reason,
        bad_rows=engine.bad_rows,
        metrics=metrics.snapshot(),
    )
