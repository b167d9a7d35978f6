"""The policy tests page of the editor: list, add, remove, load and export policy tests,
and save a tried request as one.

Every write goes through :mod:`service.policy_tests`, the layer the API and the CLI use
too. The editor has no force: a test the policy does not keep now is refused, each such
test shown with the rule that decides it.
"""

from __future__ import annotations

from flask import Response
from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from werkzeug.wrappers import Response as BaseResponse

from authz import PolicyFileError
from authz import RuleError
from authz import UnsafePath
from authz.expectations import ExpectationsBroken
from authz.expectations import Result
from authz.expectations import parse as parse_tests
from service import editing
from service import params
from service import policy_tests
from service import users
from service.admin.forms import ConfirmForm
from service.admin.forms import LoadTestsForm
from service.admin.forms import PolicyTestForm
from service.admin.forms import SaveTriedForm
from service.admin.views import PER_PAGE
from service.admin.views import add_error
from service.admin.views import bp
from service.admin.views import broken_by
from service.admin.views import who
from service.converters import RULE_ID

#: Bad lines of an uploaded file listed on the page; beyond these they are counted.
SHOWN_ERRORS = 20


def _tests_page(
    form: PolicyTestForm | None = None,
    load: LoadTestsForm | None = None,
    *,
    broken: list[Result] | None = None,
    load_errors: list[str] | None = None,
    status: int = 200,
) -> Response:
    q = request.args.get("q", "").strip()
    failing = request.args.get("failing", "") == "1"
    listing = policy_tests.listing(
        q=q,
        failing=failing,
        page=params.page(request.args.get("page")),
        per_page=PER_PAGE,
        clamp=True,
    )
    html = render_template(
        "admin/tests.html",
        listing=listing,
        q=q,
        failing=failing,
        form=form or PolicyTestForm(formdata=None),
        load=load or LoadTestsForm(formdata=None),
        broken=broken or [],
        adding=True,
        refused_for="load" if load is not None else "add",
        load_errors=load_errors or [],
        # Named with their ids, so each can be removed (the listing gives their text).
        bad=users.engine().bad_expectations() if listing.bad else [],
    )
    return Response(html, status=status)


@bp.get("/tests")
def tests() -> Response:
    """The stored policy tests, a page at a time, each passing or failing on the current
    policy with the rule that decides it; filterable by text and by failing ones."""
    return _tests_page()


_FIELDS = ("subject", "method", "path", "outcome", "note")


@bp.post("/tests")
def test_add() -> BaseResponse:
    """Store a policy test; refused, with the deciding rule, when the policy does not keep
    it now."""
    form = PolicyTestForm()
    if not form.validate_on_submit():
        return _tests_page(form, status=400)
    values = [(getattr(form, name).data or "").strip() for name in _FIELDS]
    try:
        item = policy_tests.parse(*values)
    except RuleError as e:
        add_error(getattr(form, e.field or "subject", form.subject), e.message)
        return _tests_page(form, status=400)
    try:
        added = policy_tests.add(item, who())
    except ExpectationsBroken as e:
        broken, status = broken_by(e)
        return _tests_page(form, broken=broken, status=status)
    if added:
        flash(f"Stored the policy test: {item}.", "success")
    else:
        flash(f"The policy test {item} is stored already; nothing changed.", "success")
    return redirect(url_for("admin.tests"))


@bp.route("/tests/remove", methods=["GET", "POST"])
def test_remove() -> BaseResponse | str:
    """Remove a policy test (``?id=``), after confirmation.

    The id is a query parameter, not a path segment: a test id is not a resource of its
    own to grant in the policy, and the page is the editor's, as its path says.
    """
    test_id = request.args.get("id", "")
    if not RULE_ID.match(test_id):
        abort(404, description="No such policy test.")
    item = policy_tests.find(test_id)
    form = ConfirmForm()
    back = url_for("admin.tests")
    if form.validate_on_submit():
        try:
            policy_tests.remove(test_id, who())
        except editing.Missing:
            flash("Not removed: the policy test was removed meanwhile.", "error")
        else:
            flash(f"Removed the policy test: {item}.", "success")
        return redirect(back)
    return render_template(
        "admin/confirm.html",
        form=form,
        title="Remove this policy test?",
        message=f"Remove the policy test “{item}”? Later changes are no longer checked against it.",
        warning="",
        back=back,
    )


@bp.get("/tests/export")
def tests_export() -> Response:
    """The stored policy tests as a CSV file, the format ``authz tests load`` reads."""
    response = Response(policy_tests.export(), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="policy-tests.csv"'
    return response


@bp.post("/tests/load")
def tests_load() -> BaseResponse:
    """Store the policy tests of an uploaded CSV file in one write (``replace``: and
    remove the stored ones it does not hold); nothing is stored when a line is bad or
    the policy does not keep a test of the file."""
    load = LoadTestsForm()
    if not load.validate_on_submit():
        return _tests_page(load=load, status=400)
    raw = load.file.data.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        add_error(load.file, "not UTF-8 text")
        return _tests_page(load=load, status=400)
    try:
        parsed = parse_tests(text)
    except PolicyFileError as e:
        lines = [str(error) for error in e.errors[:SHOWN_ERRORS]]
        more = len(e.errors) - len(lines) + e.more
        if more > 0:
            lines.append(f"… and {more} more bad line(s)")
        add_error(load.file, "bad lines: nothing was stored")
        return _tests_page(load=load, load_errors=lines, status=400)
    try:
        added, removed = policy_tests.load(
            parsed.expectations,
            who(),
            replace=load.replace.data,
            allow_empty=load.allow_empty.data,
        )
    except policy_tests.EmptyReplace as e:
        add_error(load.file, e.message)
        return _tests_page(load=load, status=400)
    except ExpectationsBroken as e:
        broken, status = broken_by(e)
        return _tests_page(load=load, broken=broken, status=status)
    flash(
        f"Loaded {len(parsed.expectations)} policy test(s): {len(added)} stored, "
        f"{len(removed)} removed.",
        "success",
    )
    return redirect(url_for("admin.tests"))


@bp.post("/try/save")
def try_save() -> BaseResponse:
    """Store a tried request as a policy test of what the policy decides for it now.

    The test names the subject as tried (an account's email, not the subject a
    deactivated account is decided as): a test is about the policy, not an account.
    """
    form = SaveTriedForm()
    back = url_for(
        "admin.try_request",
        subject=form.subject.data or "",
        path=form.path.data or "",
        method=form.method.data or "",
    )
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            flash("Not saved: the form expired; try the request again.", "error")
        else:
            problems = "; ".join(f"{name}: {e[0].rstrip('.')}" for name, e in form.errors.items())
            flash(f"Not saved: {problems}.", "error")
        return redirect(back)
    try:
        item = policy_tests.tried(
            form.subject.data, form.method.data, form.path.data, (form.note.data or "").strip()
        )
        if item.outcome != form.outcome.data:
            # The policy changed since the page showed the other promise: store neither.
            flash(
                f"Not saved: the policy changed since you tried it; it now decides {item}. "
                "Look at the decision again before saving it.",
                "error",
            )
            return redirect(back)
        policy_tests.add(item, who())
    except (RuleError, UnsafePath, params.BadParam, ExpectationsBroken) as e:
        # ExpectationsBroken: the policy changed between the decision and the write.
        flash(f"Not saved: {e}.", "error")
        return redirect(back)
    flash(f"Saved the policy test: {item}.", "success")
    return redirect(
        url_for(
            "admin.try_request",
            subject=form.subject.data,
            path=form.path.data,
            method=form.method.data,
            saved=item.id,
        )
    )
