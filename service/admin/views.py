"""The policy editor pages under /admin/, protected by policy rows like every other page."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import partial
from typing import Any

from flask import Blueprint
from flask import Response
from flask import abort
from flask import current_app
from flask import flash
from flask import g
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from werkzeug.wrappers import Response as BaseResponse

from authz import ANONYMOUS
from authz import AuthzError
from authz import Change
from authz import EngineUnavailable
from authz import Rule
from authz import RuleError
from authz import UnsafePath
from authz.expectations import ExpectationsBroken
from authz.expectations import Result
from authz.paths import canonical_action
from authz.paths import canonical_object
from authz.whatif import WhatIf
from service import editing
from service import params
from service import policy_tests
from service import tokens
from service import users
from service.admin.create_forms import AccountForm
from service.admin.create_forms import PasswordForm
from service.admin.create_forms import RoleForm
from service.admin.create_forms import StateForm
from service.admin.forms import AssignRoleForm
from service.admin.forms import ConfirmForm
from service.admin.forms import RuleForm
from service.admin.forms import SaveTriedForm
from service.admin.forms import TokenForm
from service.models import ServiceToken
from service.models import User
from service.responses import page as error_page
from service.responses import unavailable

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.errorhandler(params.BadParam)
@bp.errorhandler(params.Invalid)
@bp.errorhandler(editing.EditError)
@bp.errorhandler(AuthzError)
def outcome(e: Exception) -> Response:
    """An outcome no view handled, as the one table in service.editing says.

    Flask tries a blueprint's handlers along the whole class hierarchy before the app's,
    so EngineUnavailable is passed on to the app's 503 answer here.
    """
    if isinstance(e, EngineUnavailable):
        return unavailable(str(e))
    status, title, _reason = editing.http_outcome(e)
    return error_page(status, title, str(e))


def warn(rule: Rule) -> list[str]:
    """Flash the risks of a row (accepted, but worth a second look); return them."""
    found = editing.warnings(rule)
    for message in found:
        flash(f"Warning: [{rule}] {message}.", "warning")
    return found


PER_PAGE = 50
#: Policy fields of the shipped model, as the form names them.
FORM_FIELDS = {"sub": "subject", "obj": "path", "act": "methods", "eft": "effect"}


def actor() -> str:
    """The audit actor of web changes: the logged-in admin's email (or a bearer token)."""
    token = g.get("authz_token")
    if token is not None:
        return str(token.subject)  # never Flask-Login's user: it has no email
    return str(current_user.email)


def who() -> editing.Who:
    """Who makes a change from the editor."""
    return editing.Who(actor(), "web")


def paginate(items: list, page: int) -> tuple[list, int, int]:  # type: ignore[type-arg]
    """Return one page of items, the page number and the page count."""
    pages = max(1, -(-len(items) // PER_PAGE))
    page = min(max(1, page), pages)
    return items[(page - 1) * PER_PAGE : page * PER_PAGE], page, pages


def since(form_revision: str | None) -> int | None:
    """The revision a form was built from (None when it does not say, or says nonsense)."""
    value = form_revision or ""
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        return None
    return int(value)


def add_error(field: Any, message: str) -> None:
    """Show ``message`` under a form field, after the errors it has already."""
    field.errors = [*field.errors, message]


def refused(e: Exception) -> None:
    """Flash why a change was not saved."""
    flash(f"Not saved: {e}.", "error")


def previewing() -> bool:
    """Whether a form was posted with its "Preview" button: show the what-if, save nothing."""
    return request.form.get("preview") == "1"


def what_if(change: Change) -> WhatIf | None:
    """The what-if of a change, or None (flashing why) when it cannot be planned.

    A database that cannot be read is the app's 503, as for any other page.
    """
    try:
        return policy_tests.what_if(change)
    except EngineUnavailable:
        raise
    except (AuthzError, editing.EditError) as e:
        flash(f"No preview: {e}.", "error")
        return None


def broken_by(e: ExpectationsBroken) -> tuple[list[Result], int]:
    """The policy tests a refused write breaks, and the status its form answers with."""
    return e.results, editing.http_outcome(e)[0]


def find_user(email: str) -> User:
    """The account with exactly this email, or 404 (never another spelling's account)."""
    user = users.get(email)
    if user is None or user.email != email:
        abort(404, description="No such account.")
    return user


def confirm_removal(
    form: ConfirmForm,
    rule: Rule,
    title: str,
    message: str,
    back: str,
    *,
    broken: list[Result] | None = None,
    status: int = 200,
) -> Response:
    """The confirmation page of a row removal, with the what-if of the removal, warning
    when it locks the admin out; after a refusal, the policy tests it breaks."""
    form.revision.data = str(users.engine().revision)
    change = Change.removing(rule)
    warning = (
        "This takes away your own access to the policy editor."
        if editing.would_lock_out(actor(), change)
        else ""
    )
    html = render_template(
        "admin/confirm.html",
        form=form,
        title=title,
        message=message,
        warning=warning,
        back=back,
        whatif=what_if(change),
        broken=broken or [],
    )
    return Response(html, status=status)


# -- rules ------------------------------------------------------------------------------


@bp.get("/rules")
def rules() -> str:
    """The p rows, searchable by any column, filterable by subject, paginated.

    Read from the snapshot's indexes: a page of a million rows costs a page.
    """
    engine = users.engine()
    q = request.args.get("q", "").strip().lower()
    subject = request.args.get("subject", "").strip()
    listing = editing.shown(
        editing.list_rules(
            subject=subject,
            q=q,
            page=request.args.get("page", 1, type=int),
            per_page=PER_PAGE,
            clamp=True,
        )
    )
    return render_template(
        "admin/rules.html",
        rules=listing.items,
        total=listing.total,
        page=listing.page,
        pages=listing.pages,
        q=q,
        subject=subject,
        # Offered as suggestions: every role (a subject may also be any account or token).
        subjects=users.known_roles(),
        revision=engine.revision,
    )


def near() -> str:
    """The subject a rule link says its row names: a hint that finds the row among that
    subject's rows (the id alone is looked up in an index of every row)."""
    return request.args.get("subject", "").strip()


def _rule_from(form: RuleForm) -> Rule:
    return Rule(
        "p",
        (
            (form.subject.data or "").strip(),
            (form.path.data or "").strip(),
            (form.methods.data or "").strip(),
            form.effect.data or "allow",
        ),
    )


def _field_errors(form: RuleForm | RoleForm, rule: Rule, *, subject: str = "subject") -> bool:
    """Put every invalid value of ``rule`` on its form field; return whether any was."""
    names = {**FORM_FIELDS, "sub": subject}
    errors = editing.field_errors(rule)
    for name, message in errors.items():
        field = getattr(form, names.get(name, subject))
        if message not in field.errors:
            add_error(field, message)
    return bool(errors)


def _rule_form(rule_id: str | None) -> BaseResponse | str:
    engine = users.engine()
    rule = editing.find(rule_id, "p", near=near()) if rule_id is not None else None
    form = RuleForm()
    if request.method == "GET":
        form.revision.data = str(engine.revision)
        if rule is not None:
            form.subject.data, form.path.data, form.methods.data, form.effect.data = rule.values
            warn(rule)
    warn_self = False
    conflict: editing.Conflict | None = None
    whatif: WhatIf | None = None
    broken: list[Result] = []
    status = 200
    if request.method == "POST":
        status = 400
        valid = form.validate_on_submit()
        new = _rule_from(form)
        # Every field's error at once: the form's own checks and the engine's.
        if not _field_errors(form, new) and valid:
            change = Change(add=(new,), remove=(rule,) if rule is not None else ())
            try:
                if previewing():
                    planned = (
                        editing.add_change(new)[0]
                        if rule is None
                        else editing.edit_change(rule.id, new, since=since(form.revision.data))[0]
                    )
                    whatif = what_if(planned)
                    warn_self = editing.would_lock_out(actor(), planned)
                    status = 200
                elif editing.would_lock_out(actor(), change) and not form.confirm_self.data:
                    warn_self = True
                else:
                    if rule is None:
                        editing.add(new, who())
                    else:
                        editing.edit(rule.id, new, who(), since=since(form.revision.data))
                    verb = "Added" if rule is None else "Changed"
                    flash(f"{verb} rule [{new}].", "success")
                    warn(new)
                    return redirect(url_for("admin.rules"))
            except editing.Duplicate:
                add_error(form.subject, "this rule already exists")
            except editing.Conflict as e:
                conflict, status = e, 409
            except ExpectationsBroken as e:
                broken, status = broken_by(e)
            except (AuthzError, editing.EditError) as e:
                status = editing.http_outcome(e)[0]
                refused(e)
    return _rule_page(
        form, rule, status, conflict=conflict, warn_self=warn_self, whatif=whatif, broken=broken
    )


def _rule_page(
    form: RuleForm,
    rule: Rule | None,
    status: int,
    *,
    conflict: editing.Conflict | None = None,
    warn_self: bool = False,
    whatif: WhatIf | None = None,
    broken: list[Result] | None = None,
) -> Response:
    """The rule form; after a conflict it posts over the current version, or adds anew.

    A preview shows the change's what-if under the form; a refusal by policy tests, each
    broken test above it.
    """
    target = None
    if conflict is not None:
        target = (
            url_for("admin.rule_edit", rule_id=conflict.current.id)
            if conflict.current is not None
            else url_for("admin.rule_new")
        )
    html = render_template(
        "admin/rule_form.html",
        form=form,
        rule=rule,
        warn_self=warn_self,
        conflict=conflict,
        target=target,
        whatif=whatif,
        broken=broken or [],
    )
    return Response(html, status=status)


@bp.route("/rules/new", methods=["GET", "POST"])
def rule_new() -> BaseResponse | str:
    """Add a p row; validated exactly as the CSV loader validates."""
    return _rule_form(None)


@bp.route("/rules/<rule_id:rule_id>/edit", methods=["GET", "POST"])
def rule_edit(rule_id: str) -> BaseResponse | str:
    """Change a p row (the old row out, the new one in, in one transaction).

    Checked against that row only: other changes since the form was shown do not stale
    it. When the row itself changed meanwhile, both versions are shown and what the
    admin typed is kept.
    """
    try:
        return _rule_form(rule_id)
    except editing.Missing:
        if request.method == "POST":
            return _rule_form_gone(rule_id)
        raise


def _rule_form_gone(rule_id: str) -> Response:
    """A POST to edit a row that is no longer there: a conflict, the typed values kept."""
    form = RuleForm()
    form.validate()
    mine = _rule_from(form)
    found = editing.removed_since(rule_id, since(form.revision.data), ptype="p")
    if found is None:
        abort(404, description="No such rule (it may have been changed or removed).")
    old, current, entry = found
    conflict = editing.Conflict(old, mine, current, entry)
    return _rule_page(form, old, 409, conflict=conflict)


@bp.route("/rules/<rule_id:rule_id>/delete", methods=["GET", "POST"])
def rule_delete(rule_id: str) -> BaseResponse | str:
    """Remove a rule, after confirmation (a rule already removed is said so, not a 404)."""
    form = ConfirmForm()
    try:
        rule = editing.find(rule_id, "p", near=near())
    except editing.Missing:
        if not form.validate_on_submit():
            raise
        found = editing.removed_since(rule_id, since(form.revision.data), ptype="p")
        if found is None:
            raise
        flash(
            f"Not removed: {editing.Conflict(found[0], None, found[1], found[2]).message}.", "error"
        )
        return redirect(url_for("admin.rules"))
    title, message, back = "Remove this rule?", f"Remove [{rule}]?", url_for("admin.rules")
    confirming = partial(confirm_removal, form, rule, title, message, back)
    if form.validate_on_submit():
        try:
            editing.remove(rule.id, who(), ptype="p", since=since(form.revision.data))
        except ExpectationsBroken as e:
            broken, status = broken_by(e)
            return confirming(broken=broken, status=status)
        except (AuthzError, editing.EditError) as e:
            refused(e)
        else:
            flash(f"Removed rule [{rule}].", "success")
        return redirect(url_for("admin.rules"))
    return confirming()


# -- roles ------------------------------------------------------------------------------


@bp.get("/roles")
def roles() -> str:
    """Role inheritance as an indented tree, each role with its count of direct members.

    Members are counted, not listed (a role may have a hundred thousand): the role's own
    page lists them a page at a time.
    """
    names = users.known_roles()
    current = editing.view()
    parents: dict[str, list[str]] = {}
    for name in names:
        for link in current.links_of(name):
            parents.setdefault(name, []).append(link.values[1])
    children: dict[str, list[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    tops = [n for n in names if n not in parents]
    tree: list[tuple[int, str]] = []

    def walk(name: str, depth: int, seen: frozenset[str]) -> None:
        tree.append((depth, name))
        for child in sorted(children.get(name, [])):
            if child not in seen:
                walk(child, depth + 1, seen | {child})

    for top in tops:
        walk(top, 0, frozenset({top}))
    counts = {n: current.member_count(n) for n in names}
    return render_template("admin/roles.html", tree=tree, counts=counts)


@bp.route("/roles/new", methods=["GET", "POST"])
def role_new() -> BaseResponse | str:
    """Create a role with its first rule (a role exists while a row names it)."""
    form = RoleForm()
    status = 200
    whatif: WhatIf | None = None
    broken: list[Result] = []
    if request.method == "POST":
        status = 400
        valid = form.validate_on_submit()
        role = (form.role.data or "").strip()
        first = Rule(
            "p",
            (
                role,
                (form.path.data or "").strip(),
                (form.methods.data or "").strip(),
                form.effect.data or "allow",
            ),
        )
        if role and role in users.known_roles():
            add_error(form.role, f"the role {role!r} exists already")
        elif not _field_errors(form, first, subject="role") and valid:
            if previewing():
                whatif, status = what_if(Change.adding(first)), 200
            else:
                try:
                    editing.create_role(role, first, who())
                except editing.EditError as e:
                    field = getattr(form, e.field or "role", form.role)
                    add_error(field, e.message)
                except ExpectationsBroken as e:
                    broken, status = broken_by(e)
                except AuthzError as e:
                    status = editing.http_outcome(e)[0]
                    refused(e)
                else:
                    flash(f"Created role {role} with its first rule [{first}].", "success")
                    warn(first)
                    return redirect(url_for("admin.role", role=role))
    html = render_template("admin/role_new.html", form=form, whatif=whatif, broken=broken)
    return Response(html, status=status)


@bp.get("/roles/<role:role>")
def role(role: str) -> str:
    """A role's members (a page at a time), its direct rules and the rules it inherits."""
    engine = users.engine()
    if role not in users.known_roles():
        abort(404, description=f"No role {role!r} in the policy.")
    inherited_from = engine.roles_for(role)
    current = editing.view()
    members, page, pages = paginate(editing.members_of(role), params.page(request.args.get("page")))
    return render_template(
        "admin/role.html",
        role=role,
        members=members,
        member_count=current.member_count(role),
        page=page,
        pages=pages,
        direct=current.rules_of(role),
        inherited=current.rules_of(*inherited_from) if inherited_from else [],
        parents=inherited_from,
    )


# -- users ------------------------------------------------------------------------------


@bp.get("/users")
def users_list() -> str:
    """Accounts, searchable, with their direct roles."""
    q = request.args.get("q", "").strip()
    rows, total, page = users.users_page(
        q, page=request.args.get("page", 1, type=int), per_page=PER_PAGE, clamp=True
    )
    pages = max(1, -(-total // PER_PAGE))
    roles = {u.email: users.direct_roles(u.email) for u in rows}
    return render_template("admin/users.html", users=rows, roles=roles, q=q, page=page, pages=pages)


@bp.get("/users/<email:email>")
def user_detail(email: str) -> Response:
    """One account: state, direct and effective roles, effective permissions."""
    return _user_page(find_user(email), AssignRoleForm())


def _user_page(
    user: User,
    form: AssignRoleForm,
    *,
    whatif: WhatIf | None = None,
    broken: list[Result] | None = None,
    status: int = 200,
) -> Response:
    engine = users.engine()
    direct = users.direct_roles(user.email)
    form.role.choices = [r for r in assignable_roles() if r not in direct]
    form.revision.data = str(engine.revision)
    html = render_template(
        "admin/user.html",
        user=user,
        direct=direct,
        effective=engine.roles_for(user.email),
        permissions=users.effective_rules(user.email),
        sessions=users.list_sessions(user.id),
        form=form,
        confirm=ConfirmForm(),
        whatif=whatif,
        broken=broken or [],
    )
    return Response(html, status=status)


@bp.route("/users/new", methods=["GET", "POST"])
def user_new() -> BaseResponse | str:
    """Create an account with a password and its roles; the admin vouches for the address."""
    form = AccountForm()
    form.roles.choices = assignable_roles()
    status = 200
    broken: list[Result] = []
    if request.method == "POST":
        status = 400
        valid = form.validate_on_submit()
        # Every field's error at once: the address and the password are checked apart.
        checks = (
            (form.email, lambda: users.normalize_email(form.email.data or "")),
            (form.password, lambda: users.check_password(form.password.data or "")),
        )
        for field, check in checks:
            try:
                if field.data:
                    check()
            except users.AccountError as e:
                add_error(field, e.message)
                valid = False
        if valid:
            try:
                user = users.create(
                    form.email.data or "",
                    form.password.data or "",
                    roles=form.roles.data or None,
                    actor=actor(),
                    source="web",
                )
            except users.AccountError as e:
                target = {"password": form.password, "role": form.roles}.get(
                    e.field or "", form.email
                )
                add_error(target, e.message)
            except ExpectationsBroken as e:
                broken, status = broken_by(e)
            except AuthzError as e:
                status = editing.http_outcome(e)[0]
                refused(e)
            else:
                flash(f"Created the account {user.email}.", "success")
                return redirect(url_for("admin.user_detail", email=user.email))
    html = render_template("admin/user_new.html", form=form, broken=broken)
    return Response(html, status=status)


def assignable_roles() -> list[str]:
    """Roles an admin may hand out in a form: every role but ``anonymous``, which
    everyone holds already."""
    return [r for r in users.known_roles() if r != ANONYMOUS]


@bp.post("/users/<email:email>/roles")
def user_assign(email: str) -> BaseResponse:
    """Give an account a role (no role chosen: the page again, the error on the field)."""
    user = find_user(email)
    form = AssignRoleForm()
    form.role.choices = assignable_roles()
    if not (form.validate_on_submit() and form.role.data):
        return _user_page(user, form, status=400)
    if previewing():
        try:
            change = editing.assign_change(user.email, form.role.data)
        except (AuthzError, editing.EditError, users.AccountError) as e:
            if isinstance(e, EngineUnavailable):
                raise
            add_error(form.role, str(e))
            return _user_page(user, form, status=400)
        return _user_page(user, form, whatif=what_if(change))
    try:
        changed = editing.assign(user.email, form.role.data, who())
    except ExpectationsBroken as e:
        broken, status = broken_by(e)
        return _user_page(user, form, broken=broken, status=status)
    except (AuthzError, editing.EditError, users.AccountError) as e:
        refused(e)
    else:
        flash(
            f"{user.email} now has role {form.role.data}."
            if changed
            else f"{user.email} already has role {form.role.data}; nothing changed.",
            "success",
        )
    return redirect(url_for("admin.user_detail", email=user.email))


@bp.route("/users/<email:email>/roles/<role:role>/remove", methods=["GET", "POST"])
def user_unassign(email: str, role: str) -> BaseResponse | str:
    """Take a role away from an account, after confirmation."""
    user = find_user(email)
    rule = Rule("g", (user.email, role))
    form = ConfirmForm()
    back = url_for("admin.user_detail", email=user.email)
    confirming = partial(
        confirm_removal,
        form,
        rule,
        "Remove this role?",
        f"Take role {role!r} away from {user.email}?",
        back,
    )
    if form.validate_on_submit():
        try:
            changed = editing.unassign(user.email, role, who())
        except ExpectationsBroken as e:
            broken, status = broken_by(e)
            return confirming(broken=broken, status=status)
        except (AuthzError, editing.EditError) as e:
            refused(e)
        else:
            flash(
                f"{user.email} no longer has role {role}."
                if changed
                else f"{user.email} did not have role {role}; nothing changed.",
                "success",
            )
        return redirect(back)
    if rule not in users.engine().snapshot.ruleset:
        abort(404, description=f"{user.email} does not have role {role!r}.")
    return confirming()


@bp.post("/users/<email:email>/unthrottle")
def user_unthrottle(email: str) -> BaseResponse:
    """Clear an account's login delay (audited)."""
    user = find_user(email)
    if ConfirmForm().validate_on_submit():
        try:
            users.unthrottle(email=user.email, actor=actor(), source="web")
        except (AuthzError, users.AccountError) as e:
            flash(f"Not cleared: {e}.", "error")
        else:
            flash(f"Cleared the login delay of {user.email}.", "success")
    else:
        flash("Not cleared: the form expired, try again.", "error")
    return redirect(url_for("admin.user_detail", email=user.email))


@bp.route("/users/<email:email>/active", methods=["GET", "POST"])
def user_active(email: str) -> BaseResponse | str:
    """Activate or deactivate an account (confirmed; deactivation ends its sessions).

    The page asks for the state opposite to the one shown, and the form carries that
    state: confirming "Deactivate" after another admin deactivated the account changes
    nothing, instead of activating it again.
    """
    user = find_user(email)
    form = StateForm()
    back = url_for("admin.user_detail", email=user.email)
    if request.method == "POST":
        if form.validate_on_submit():
            target = form.active.data == "1"
            try:
                changed = editing.set_active(user.email, target, who())
            except (AuthzError, users.AccountError) as e:
                refused(e)
            else:
                state = "active" if target else "inactive"
                if changed:
                    flash(f"{'Activated' if target else 'Deactivated'} {user.email}.", "success")
                else:
                    flash(f"{user.email} is already {state}; nothing changed.", "success")
            return redirect(back)
        if form.active.errors:
            return error_page(400, "Bad request", "The form did not say which state to set.")
    target = not user.active
    form.active.data = "1" if target else "0"
    verb = "Activate" if target else "Deactivate"
    message = f"{verb} {user.email}?" + ("" if target else " Their sessions end at once.")
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"{verb} this account?",
        message=message,
        warning="",
        back=back,
    )


@bp.route("/users/<email:email>/password", methods=["GET", "POST"])
def user_password(email: str) -> BaseResponse | str:
    """Set an account's password (its sessions end at once)."""
    user = find_user(email)
    form = PasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            users.set_password(user.email, form.password.data or "", actor=actor(), source="web")
        except users.AccountError as e:
            add_error(form.password, e.message)
            status = 400
        except AuthzError as e:
            status = editing.http_outcome(e)[0]
            refused(e)
        else:
            flash(f"Set a new password for {user.email}; its sessions are ended.", "success")
            return redirect(url_for("admin.user_detail", email=user.email))
    elif request.method == "POST":
        status = 400
    html = render_template("admin/user_password.html", form=form, user=user)
    return Response(html, status=status)


@bp.route("/users/<email:email>/sessions/end", methods=["GET", "POST"])
def user_end_sessions(email: str) -> BaseResponse | str:
    """End every session of an account (after confirmation): it must log in again."""
    user = find_user(email)
    form = ConfirmForm()
    back = url_for("admin.user_detail", email=user.email)
    if form.validate_on_submit():
        try:
            ended = users.end_sessions_of(
                user.id, user.email, actor=actor(), source="web", action="session.end_all"
            )
        except AuthzError as e:
            flash(f"Not ended: {e}.", "error")
        else:
            flash(f"Ended {ended} session{'' if ended == 1 else 's'} of {user.email}.", "success")
        return redirect(back)
    return render_template(
        "admin/confirm.html",
        form=form,
        title="End this account's sessions?",
        message=f"End every session of {user.email}? They must log in again on every device.",
        warning="",
        back=back,
    )


# -- service tokens ---------------------------------------------------------------------


def find_token(name: str) -> ServiceToken:
    """The token with exactly this name, or 404 (``token:NAME`` is not another spelling)."""
    token = tokens.get(name)
    if token is None or token.name != name:
        abort(404, description="No such token.")
    return token


def _token_form() -> TokenForm:
    form = TokenForm()
    form.roles.choices = users.known_roles()
    return form


def _tokens_page(
    form: TokenForm, status: int = 200, broken: list[Result] | None = None
) -> Response:
    found, page, pages = paginate(tokens.list_tokens(), params.page(request.args.get("page")))
    rows = [(t, tokens.state(t), tokens.roles_of(t.name)) for t in found]
    html = render_template(
        "admin/tokens.html", rows=rows, form=form, page=page, pages=pages, broken=broken or []
    )
    return Response(html, status=status)


@bp.get("/tokens")
def tokens_list() -> Response:
    """Service tokens with their state and roles, and the form that creates one."""
    return _tokens_page(_token_form())


@bp.post("/tokens")
def token_create() -> Response:
    """Create a token; the answer is the one page that ever shows its secret."""
    form = _token_form()
    if form.validate_on_submit():
        try:
            token, secret = tokens.create(
                form.name.data.strip(),
                roles=form.roles.data or [],
                expires_days=form.expires_days.data,
                actor=actor(),
                source="web",
            )
        except tokens.TokenError as e:
            field = {"roles": form.roles, "expires": form.expires_days}.get(
                e.field or "", form.name
            )
            add_error(field, e.message)
        except ExpectationsBroken as e:
            broken, status = broken_by(e)
            return _tokens_page(form, status=status, broken=broken)
        except AuthzError as e:  # the database or the engine refused the write
            flash(f"Not created: {e}.", "error")
        else:
            html = render_template(
                "admin/token_created.html", token=token, secret=secret, roles=form.roles.data
            )
            response = Response(html)
            # The secret must not outlive this page in any cache or the browser's history.
            response.headers["Cache-Control"] = "no-store"
            return response
    return _tokens_page(form, status=400)


@bp.route("/tokens/<token:name>/revoke", methods=["GET", "POST"])
def token_revoke(name: str) -> BaseResponse | str:
    """Revoke a token, after confirmation: refused at once, on every instance."""
    token = find_token(name)
    back = url_for("admin.tokens_list")
    if token.revoked_at is not None:
        flash(f"{token.subject} is already revoked.", "error")
        return redirect(back)
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            tokens.revoke(token.name, actor=actor(), source="web")
        except (AuthzError, tokens.TokenError) as e:
            flash(f"Not revoked: {e}.", "error")
        else:
            flash(f"Revoked {token.subject}; its requests are refused from now on.", "success")
        return redirect(back)
    return render_template(
        "admin/confirm.html",
        form=form,
        title="Revoke this token?",
        message=f"Revoke {token.subject}? Programs using it are refused at once; "
        "this cannot be undone (a new token needs a new name).",
        warning="",
        back=back,
    )


# -- audit ------------------------------------------------------------------------------


@bp.get("/audit")
def audit() -> str:
    """Every policy and account change, newest first, filterable by actor and date."""
    query = editing.AuditQuery.parse(request.args, per_page=PER_PAGE)
    entries, more = query.entries()
    return render_template(
        "admin/audit.html",
        entries=entries,
        more=more,
        page=query.page,
        actor=query.actor or "",
        since=request.args.get("since", ""),
        until=request.args.get("until", ""),
    )


# -- try a request, who can reach ------------------------------------------------------


@bp.get("/try")
def try_request() -> str:
    """Decide a request as the middleware would, and name the rule that decided."""
    # Surrounding spaces of a form field go; an email's case is never changed silently.
    subject = request.args.get("subject", "").strip()
    path = request.args.get("path", "").strip()
    method = request.args.get("method", "GET").strip() or "GET"
    tried = error = None
    if subject and path:
        try:
            tried = editing.try_request(subject, path, method)
        except UnsafePath as e:
            error = f"refused path: {e}"
        except params.BadParam as e:
            error = str(e)
    save = promise = None
    if tried is not None:
        # The test names the subject as tried, never the one it was decided as (a
        # deactivated account's verdict above is anonymous's; its test is its own).
        try:
            promise = policy_tests.tried(tried.subject, method, path)
        except RuleError:  # a request no test can name (a method the tests refuse)
            promise = None
        else:
            save = SaveTriedForm(
                formdata=None,
                subject=tried.subject,
                method=method,
                path=path,
                outcome=promise.outcome,
            )
    return render_template(
        "admin/try.html",
        subject=subject,
        path=path,
        method=method,
        decision=tried.decision if tried else None,
        note=tried.note if tried else "",
        error=error,
        save=save,
        promise=promise,
        saved=request.args.get("saved", "") != "",
    )


_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _sample_path(rule: str) -> str:
    return _CONVERTER.sub(lambda m: "1" if "int" in m.group(0) else m.group(1), rule)


def _allowed(subjects: Iterable[str], path: str, method: str) -> list[str]:
    engine = users.engine()
    return [s for s in subjects if engine.decide(s, path, method).allowed]


#: How many rules matching no route the page lists (it counts them all).
UNMATCHED_SHOWN = 50


@bp.get("/reach")
def reach() -> str:
    """Who may request a path, and which roles may reach each route of the app.

    Computed from indexes, not by deciding for every account: the candidates are the
    subjects of the rules whose path pattern accepts the path and everyone holding their
    roles, and each candidate is then decided as the middleware would.
    """
    engine = users.engine()
    roles = users.known_roles()
    reacher = editing.Reach.of(engine.snapshot)
    path = request.args.get("path", "").strip()
    method = canonical_action(request.args.get("method", "GET").strip() or "GET")
    allowed_roles: list[str] = []
    allowed_users: list[str] = []
    error = None
    if path:
        try:
            obj = canonical_object(path)
        except UnsafePath as e:
            error = f"refused path: {e}"
        else:
            allowed_roles = _allowed(reacher.candidate_roles(obj, roles), obj, method)
            found = reacher.candidates(obj, allowed_roles)
            if found is None:  # a model the indexes cannot narrow down: every account
                allowed_users = _allowed(
                    [u.email for u in users.list_users() if u.active], obj, method
                )
            else:
                emails = [s for s in found if "@" in s]
                allowed_users = users.active_emails(_allowed(emails, obj, method))
    routes = []
    samples = []
    for rule in sorted(current_app.url_map.iter_rules(), key=lambda r: r.rule):
        sample = _sample_path(rule.rule)
        samples.append(sample)
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        candidates = reacher.candidate_roles(sample, roles)
        by_method = {m: _allowed(candidates, sample, m) for m in methods}
        routes.append((rule.rule, by_method, not any(by_method.values())))
    unmatched, unmatched_count = reacher.unmatched(samples, UNMATCHED_SHOWN)
    return render_template(
        "admin/reach.html",
        path=path,
        method=method,
        allowed_roles=allowed_roles,
        allowed_users=allowed_users,
        routes=routes,
        unmatched=unmatched,
        unmatched_count=unmatched_count,
        error=error,
    )


# The policy tests pages register their routes on this blueprint (they import from here).
from service.admin import tests_page as _tests_page  # noqa: E402, F401
