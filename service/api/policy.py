"""Policy rows: rules (``p`` rows) and role assignments (``g`` rows).

Every write takes ``?dry_run=1``: the change is built as the write would build it (so a
duplicate or a missing row answers as the write does), planned on the stored policy, and
answered with its what-if (who gains and loses which request, which policy tests flip,
whether the write would be refused); nothing is written, not even an audit entry.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from flask import Response
from flask import request
from flask import url_for

from authz import Rule
from authz.rules import EFFECTS
from authz.rules import field_names
from service import editing
from service import users as accounts
from service.api import schemas
from service.api.views import SOURCE
from service.api.views import Problem
from service.api.views import actor
from service.api.views import api_field
from service.api.views import body
from service.api.views import bp
from service.api.views import dry_run
from service.api.views import ok
from service.api.views import planned
from service.api.views import with_dry_run
from service.api.views import write_revision
from service.users import engine

RULE, LINK = "p", "g"
#: The body of a role assignment.
LINK_FIELDS = {
    "member": schemas.Field(str),
    "role": schemas.Field(str),
    "revision": schemas.Field(int, required=False),
}


def rule_names() -> tuple[str, ...]:
    """The values of a rule as the API names them, in the model's order."""
    return tuple(str(api_field(name)) for name in field_names(RULE, engine().model))


def rule_item(rule: Rule, names: tuple[str, ...]) -> dict[str, str]:
    """Return the JSON shape of a rule."""
    return {"id": rule.id, **dict(zip(names, rule.values, strict=True))}


def link_item(rule: Rule) -> dict[str, str]:
    """Return the JSON shape of a role assignment."""
    return {"id": rule.id, "member": rule.values[0], "role": rule.values[1]}


def rule_fields(names: tuple[str, ...]) -> dict[str, schemas.Field]:
    """The body of a rule write: every value (a trailing effect may be left out) and revision."""
    fields = {name: schemas.Field(str) for name in names}
    if names and names[-1] == "effect":
        fields["effect"] = schemas.Field(str, required=False)  # omitted: allow
    return {**fields, "revision": schemas.Field(int, required=False)}


def rule_from(data: Mapping[str, Any], names: tuple[str, ...]) -> Rule:
    """Return the validated rule a body describes (RuleError names the bad field)."""
    values = tuple(data[name] for name in names if name in data)
    return editing.validate(Rule(RULE, values))


def warnings(rule: Rule) -> list[str]:
    """The risks of a row just written (accepted, but worth a second look)."""
    return editing.warnings(rule)


def who() -> editing.Who:
    """Who writes through the API: the logged-in account or the bearer token."""
    return editing.Who(actor(), SOURCE)


def read_at(data: Mapping[str, Any]) -> int | None:
    """The revision the client read the row at (optional; checked when given): it lets a
    conflict name what the row became."""
    value = data.get("revision")
    return None if value is None else schemas.revision(value)


def rule_effect(rule: Rule, names: tuple[str, ...]) -> str:
    """Return a rule's effect (rows of models without one allow)."""
    return rule.values[names.index("effect")] if "effect" in names else "allow"


# -- rules ------------------------------------------------------------------------------


@bp.get("/policy/rules")
def rules() -> Response:
    """List rules, filtered by subject, effect or a substring of any value, one page at a time."""
    page, per_page = schemas.paging(request.args)
    effect = schemas.choice(request.args.get("effect"), "effect", EFFECTS)
    snapshot = engine().snapshot
    listing = editing.shown(
        editing.list_rules(
            subject=request.args.get("subject", ""),
            q=request.args.get("q", ""),
            effect=effect or "",
            page=page,
            per_page=per_page,
        )
    )
    names = rule_names()
    return ok({"revision": snapshot.revision, **paged(listing, lambda r: rule_item(r, names))})


def paged(listing: editing.Listing, item: Callable[[Rule], dict[str, str]]) -> dict[str, Any]:
    """The paging fields of a list response and its items."""
    return {
        "total": listing.total,
        "page": listing.page,
        "per_page": listing.per_page,
        "items": [item(r) for r in listing.items],
    }


@bp.get("/policy/rules/<rule_id:rule_id>")
def rule(rule_id: str) -> Response:
    """Return one rule."""
    snapshot = engine().snapshot
    found = editing.find(rule_id, RULE)
    return ok({"revision": snapshot.revision, "rule": rule_item(found, rule_names())})


@bp.post("/policy/rules")
@with_dry_run
def rule_add() -> Response:
    """Add a rule; 409 when the policy already has it (``?dry_run=1``: its what-if)."""
    names = rule_names()
    data = body(rule_fields(names))
    read_at(data)
    rule, writer = rule_from(data, names), who()
    if dry_run():
        change, _action, _detail = editing.add_change(rule)
        return planned(change, strict=True)
    applied = editing.add(rule, writer)
    new = applied.added[0]
    response = ok(
        {"revision": applied.revision, "rule": rule_item(new, names), "warnings": warnings(new)},
        201,
    )
    response.headers["Location"] = url_for("api.rule", rule_id=new.id)
    return response


@bp.put("/policy/rules/<rule_id:rule_id>")
@with_dry_run
def rule_replace(rule_id: str) -> Response:
    """Replace a rule: the old row out and the new one in, in one change.

    Checked against that row only; 409 with the current row when it changed meanwhile.
    The id is derived from the content, so the changed rule has a new id. ``?dry_run=1``:
    its what-if.
    """
    names = rule_names()
    data = body(rule_fields(names))
    new, writer = rule_from(data, names), who()
    if dry_run():
        change, _old = editing.edit_change(rule_id, new, since=read_at(data))
        return planned(change, strict=True)
    applied = editing.edit(rule_id, new, writer, since=read_at(data))
    return ok(
        {"revision": applied.revision, "rule": rule_item(new, names), "warnings": warnings(new)}
    )


@bp.delete("/policy/rules/<rule_id:rule_id>")
@with_dry_run
def rule_remove(rule_id: str) -> Response:
    """Remove a rule (409 with what it became when it changed meanwhile; ``?dry_run=1``:
    its what-if)."""
    since, writer = write_revision(), who()
    if dry_run():
        change, _action, _detail = editing.remove_change(rule_id, ptype=RULE, since=since)
        return planned(change, strict=True)
    applied = editing.remove(rule_id, writer, ptype=RULE, since=since)
    return ok(
        {"revision": applied.revision, "removed": rule_item(applied.removed[0], rule_names())}
    )


# -- role assignments -------------------------------------------------------------------


@bp.get("/policy/roles")
def links() -> Response:
    """List role assignments, filtered by member and role, one page at a time."""
    page, per_page = schemas.paging(request.args)
    snapshot = engine().snapshot
    listing = editing.shown(
        editing.list_links(
            member=request.args.get("member", ""),
            role=request.args.get("role", ""),
            page=page,
            per_page=per_page,
        )
    )
    return ok({"revision": snapshot.revision, **paged(listing, link_item)})


@bp.get("/policy/roles/<rule_id:rule_id>")
def link(rule_id: str) -> Response:
    """Return one role assignment."""
    snapshot = engine().snapshot
    found = editing.find(rule_id, LINK)
    return ok({"revision": snapshot.revision, "assignment": link_item(found)})


@bp.get("/policy/roles/<role:role>/members")
def members(role: str) -> Response:
    """Return the direct members (accounts and roles) of a role."""
    snapshot = engine().snapshot
    if role not in accounts.known_roles():
        raise Problem(404, "Not found", f"no role {role!r} in the policy")
    members = editing.members_of(role)
    return ok({"revision": snapshot.revision, "role": role, "members": members})


@bp.post("/policy/roles")
@with_dry_run
def link_add() -> Response:
    """Give an account, a role or a token a role; 409 when it already has it directly.

    As on the command line, a typo must not create a row for a role no rule names. An
    email with no account is accepted (a grant ahead of registration), with a warning.
    ``?dry_run=1``: its what-if.
    """
    data = body(LINK_FIELDS)
    read_at(data)
    member = editing.member_of(data["member"])
    new = editing.validate(Rule(LINK, (member, data["role"])))
    writer = who()
    if dry_run():
        change = editing.assign_change(member, data["role"])
        if not change:
            raise editing.Duplicate(new)
        return planned(change, strict=False)
    if not editing.assign(member, data["role"], writer):
        raise editing.Duplicate(new)
    response = ok(
        {
            "revision": accounts.engine().revision,
            "assignment": link_item(new),
            "warnings": warnings(new),
        },
        201,
    )
    response.headers["Location"] = url_for("api.link", rule_id=new.id)
    return response


@bp.delete("/policy/roles/<rule_id:rule_id>")
@with_dry_run
def link_remove(rule_id: str) -> Response:
    """Take a role away from an account, a role or a token (``?dry_run=1``: its what-if)."""
    since, writer = write_revision(), who()
    if dry_run():
        change, _action, _detail = editing.remove_change(rule_id, ptype=LINK, since=since)
        return planned(change, strict=True)
    applied = editing.remove(rule_id, writer, ptype=LINK, since=since)
    return ok({"revision": applied.revision, "removed": link_item(applied.removed[0])})
