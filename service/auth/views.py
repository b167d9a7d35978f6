"""/login, /register, /logout, /account; email verification, password reset, invitations."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask_login import current_user
from flask_login import login_user
from flask_login import logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse

from authz import metrics
from service import proxies
from service import responses
from service import users
from service.auth.account_forms import ChangePasswordForm
from service.auth.account_forms import EndSessionForm
from service.auth.account_forms import EndSessionsForm
from service.auth.forms import ForgotForm
from service.auth.forms import InviteForm
from service.auth.forms import LoginForm
from service.auth.forms import LogoutForm
from service.auth.forms import NewPasswordForm
from service.auth.forms import RegisterForm
from service.auth.forms import ResendForm
from service.events import Event
from service.events import auth_event
from service.responses import safe_next_url

if TYPE_CHECKING:
    from service.models import User
    from service.sessions import SessionUser

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)

#: One message for a wrong password, an unknown email and a deactivated account,
#: so the form does not reveal which accounts exist.
BAD_CREDENTIALS = "Wrong email or password."


def _start_session(user: User) -> None:
    # A fresh session at login: nothing from before the login survives into it, and a
    # new server-side session with a new random id every time, so an id planted in the
    # browser before the login (session fixation) logs nobody in.
    previous = current_user._get_current_object()
    if previous is not None and previous.is_authenticated:
        # This device logs in again (maybe as someone else): its old session ends.
        users.end_sessions_of(
            previous.id,
            previous.email,
            actor=previous.email,
            source="web",
            only=previous.session_id,
            action="user.logout",
            audit=False,
        )
    started = users.start_session(
        user, address=proxies.client_address(), agent=request.user_agent.string
    )
    session.clear()
    login_user(started)
    # The cookie survives a browser restart; the session row's idle and absolute
    # lifetimes end it (AUTHZ_SESSION_IDLE, AUTHZ_SESSION_ABSOLUTE).
    session.permanent = True


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | str:
    """Show the login form; log in and go to a same-site ``next``."""
    form = LoginForm(next=request.args.get("next", ""))
    status = 200
    if form.validate_on_submit():
        address = proxies.client_address()
        try:
            # Counted before the password is checked: concurrent guesses cannot pass it.
            attempt = users.count_attempt(form.email.data, address)
        except users.LoginThrottled as e:
            # The same answer whether or not the account exists; only the wait differs,
            # and that depends on the attempts made, not on the account.
            metrics.login("throttled")
            auth_event(Event.LOGIN_THROTTLED, form.email.data, retry_after=e.retry_after)
            flash("Too many failed attempts. Wait a little and try again.", "error")
            response = Response(render_template("auth/login.html", form=form), status=429)
            response.headers["Retry-After"] = str(e.retry_after)
            return response
        user = users.authenticate(form.email.data, form.password.data)
        if user is None:
            metrics.login("failure")
            auth_event(Event.LOGIN_FAILURE, form.email.data)
            users.login_failed(attempt)
            flash(BAD_CREDENTIALS, "error")
            status = 401
        else:
            metrics.login("success")
            auth_event(Event.LOGIN_SUCCESS, user.email)
            users.login_succeeded(attempt)
            _start_session(user)
            return redirect(safe_next_url(form.next.data) or url_for("pages.home"))
    elif request.method == "POST":
        status = 400
    return Response(render_template("auth/login.html", form=form), status=status)


def _registration_refused() -> Response | None:
    """The page for a register request the registration mode does not allow, if any."""
    mode = current_app.config["AUTHZ"].registration
    if mode == "open":
        return None
    # 403: the page exists, and says why it cannot be used (documented in the README).
    return Response(render_template("auth/register_closed.html", mode=mode), status=403)


@bp.route("/register", methods=["GET", "POST"])
def register() -> BaseResponse | str:
    """Create an account with the default role, log it in, and mail a verification link."""
    refused = _registration_refused()
    if refused is not None:
        return refused
    form = RegisterForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = users.register(form.email.data, form.password.data)
        except users.AccountError as e:
            field = form.password if e.field == "password" else form.email
            field.errors = [*field.errors, e.message]
            status = 400
        else:
            _start_session(user)
            return redirect(url_for("auth.verify_sent"))
    elif request.method == "POST":
        status = 400
    return Response(render_template("auth/register.html", form=form), status=status)


@bp.route("/register/<token>", methods=["GET", "POST"])
def register_invited(token: str) -> BaseResponse | str:
    """Create the account of an invitation link (verified by the link) and log it in."""
    if current_app.config["AUTHZ"].registration == "closed":
        return Response(render_template("auth/register_closed.html", mode="closed"), status=403)
    try:
        email = users.invited_email(token)
    except users.LinkError as e:
        return _bad_link("invitation", e.reason)
    form = NewPasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = users.register_invited(token, form.password.data)
        except users.LinkError as e:
            return _bad_link("invitation", e.reason)
        except users.AccountError as e:
            form.password.errors = [*form.password.errors, e.message]
            status = 400
        else:
            _start_session(user)
            flash(f"Welcome, {user.email}.", "success")
            return redirect(url_for("pages.home"))
    elif request.method == "POST":
        status = 400
    page = render_template("auth/register_invited.html", form=form, email=email)
    return Response(page, status=status)


def _bad_link(kind: str, reason: str) -> Response:
    page = render_template("auth/link_invalid.html", kind=kind, reason=reason)
    return Response(page, status=400)


@bp.route("/verify/sent")
def verify_sent() -> str:
    """Say a verification link was mailed; offer to send it again."""
    return render_template("auth/verify_sent.html", form=ResendForm())


@bp.route("/verify/resend", methods=["POST"])
def verify_resend() -> BaseResponse:
    """Mail the logged-in account's verification link again."""
    form = ResendForm()
    if not form.validate_on_submit():
        return Response(render_template("auth/verify_sent.html", form=form), status=400)
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    user = users.get(current_user.email)
    if user is not None and not users.is_verified(user):
        users.send_verification(user)
    flash("A new verification link is on its way.", "success")
    return redirect(url_for("auth.verify_sent"))


@bp.route("/verify/<token>")
def verify(token: str) -> BaseResponse | str:
    """Verify the email of a link's account (the link works once)."""
    try:
        user = users.verify_email(token)
    except users.LinkError as e:
        return _bad_link("verification", e.reason)
    log.info("email verified for %s", user.email)
    return render_template("auth/verified.html", email=user.email)


@bp.route("/password/forgot", methods=["GET", "POST"])
def forgot_password() -> BaseResponse | str:
    """Ask for a reset link; the answer is the same whether or not the account exists."""
    form = ForgotForm()
    if form.validate_on_submit():
        users.request_password_reset(form.email.data)
        return render_template("auth/forgot_sent.html")
    status = 400 if request.method == "POST" else 200
    return Response(render_template("auth/forgot.html", form=form), status=status)


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str) -> BaseResponse | str:
    """Choose a new password through a reset link; every session of the account ends."""
    try:
        users.reset_account(token)
    except users.LinkError as e:
        return _bad_link("password reset", e.reason)
    form = NewPasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = users.reset_password(token, form.password.data)
        except users.LinkError as e:
            return _bad_link("password reset", e.reason)
        except users.AccountError as e:
            form.password.errors = [*form.password.errors, e.message]
            status = 400
        else:
            log.info("password reset for %s", user.email)
            logout_user()
            session.clear()
            flash("Your password is changed; every session was ended. Log in.", "success")
            return redirect(url_for("auth.login"))
    elif request.method == "POST":
        status = 400
    return Response(render_template("auth/reset.html", form=form), status=status)


@bp.route("/admin/invite", methods=["GET", "POST"])
def invite() -> BaseResponse | str:
    """Invite an address to register (admins, by the default policy's /admin/* row)."""
    form = InviteForm()
    status = 200
    link = None
    if form.validate_on_submit():
        try:
            link = users.invite(form.email.data, actor=current_user.email, source="web")
        except users.AccountError as e:
            form.email.errors = [*form.email.errors, e.message]
            status = 400
        else:
            flash(f"Invitation sent to {form.email.data.strip().lower()}.", "success")
    elif request.method == "POST":
        status = 400
    page = render_template(
        "auth/invite.html",
        form=form,
        link=link,
        mode=current_app.config["AUTHZ"].registration,
    )
    return Response(page, status=status)


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> BaseResponse | str:
    """GET asks for confirmation; POST (with CSRF token) ends this device's session."""
    form = LogoutForm()
    if request.method == "POST" and form.validate_on_submit():
        user = current_user._get_current_object()
        if user.is_authenticated:
            # Ending the row kills this cookie on every instance, even if a copy of it
            # is replayed; the account's other devices stay logged in.
            users.end_sessions_of(
                user.id,
                user.email,
                actor=user.email,
                source="web",
                only=user.session_id,
                action="user.logout",
                audit=False,
            )
        _forget_session("You are logged out.")
        return redirect(url_for("auth.login"))
    return render_template("auth/logout.html", form=form)


def _forget_session(message: str) -> None:
    logout_user()
    session.clear()
    flash(message, "success")


# -- the account page ------------------------------------------------------------------


def _me() -> SessionUser | None:
    """The logged-in account, or None (a policy may let visitors reach these pages)."""
    user = current_user._get_current_object()
    return user if user is not None and user.is_authenticated else None


def _account_page(
    password_form: ChangePasswordForm | None = None, status: int = 200
) -> BaseResponse:
    me = _me()
    if me is None:
        return responses.login_required()
    return Response(
        render_template(
            "account/index.html",
            sessions=users.list_sessions(me.id),
            this_session=me.session_id,
            end_form=EndSessionForm(),
            bulk_form=EndSessionsForm(),
            password_form=password_form or ChangePasswordForm(formdata=None),
        ),
        status=status,
    )


@bp.get("/account")
def account() -> BaseResponse:
    """The account page: this account's sessions (one per device) and a password change."""
    return _account_page()


def _submitted(form: FlaskForm, problem: str) -> SessionUser | BaseResponse:
    """The logged-in account, when ``form`` is valid; otherwise the answer that stops the view.

    Not logged in: the login redirect (or 401). A form that does not validate (missing
    field, expired CSRF token): back to the account page with ``problem`` flashed.
    """
    me = _me()
    if me is None:
        return responses.login_required()
    if not form.validate_on_submit():
        flash(problem, "error")
        return redirect(url_for("auth.account"))
    return me


@bp.post("/account/sessions/end")
def end_session() -> BaseResponse:
    """End one of this account's sessions (this device's too: that is a logout)."""
    form = EndSessionForm()
    me = _submitted(form, "Not ended: the form was incomplete or expired; try again.")
    if isinstance(me, BaseResponse):
        return me
    chosen = form.session.data
    # Scoped to this account: another account's session id ends nothing, and the answer
    # does not say whether it exists.
    ended = users.end_sessions_of(me.id, me.email, actor=me.email, source="web", only=chosen)
    if not ended:
        flash("No such session of yours (it may have ended already).", "error")
    elif chosen == me.session_id:
        _forget_session("This device's session ended: you are logged out.")
        return redirect(url_for("auth.login"))
    else:
        flash("The session ended.", "success")
    return redirect(url_for("auth.account"))


@bp.post("/account/sessions/end-others")
def end_other_sessions() -> BaseResponse:
    """End every session of this account but this device's."""
    me = _submitted(EndSessionsForm(), "Not ended: the form expired; try again.")
    if isinstance(me, BaseResponse):
        return me
    ended = users.end_sessions_of(me.id, me.email, actor=me.email, source="web", keep=me.session_id)
    flash(f"Ended {ended} other session{'' if ended == 1 else 's'}.", "success")
    return redirect(url_for("auth.account"))


@bp.post("/account/sessions/end-all")
def logout_everywhere() -> BaseResponse:
    """Log out everywhere: end every session of this account, this device's included."""
    me = _submitted(EndSessionsForm(), "Not ended: the form expired; try again.")
    if isinstance(me, BaseResponse):
        return me
    users.end_sessions_of(me.id, me.email, actor=me.email, source="web", action="user.logout_all")
    _forget_session("You are logged out on every device.")
    return redirect(url_for("auth.login"))


@bp.post("/account/password")
def change_password() -> BaseResponse:
    """Change this account's password (the current one required); end its other sessions."""
    me = _me()
    form = ChangePasswordForm()
    if me is None:
        return responses.login_required()
    if not form.validate_on_submit():
        return _account_page(form, status=400)
    # A stolen session must not become a password-guessing oracle: the current password
    # is checked under the same counters as a login (counted first, delays that double).
    try:
        attempt = users.count_attempt(me.email, proxies.client_address())
    except users.LoginThrottled as e:
        form.current.errors = [*form.current.errors, "Too many attempts; try again later."]
        response = _account_page(form, status=429)
        response.headers["Retry-After"] = str(e.retry_after)
        return response
    try:
        ended = users.change_own_password(
            me.email, form.current.data, form.password.data, keep_session=me.session_id
        )
    except users.AccountError as e:
        # The attempt stays counted: only a completed change clears it.
        if e.field == "current":
            users.login_failed(attempt)
        field = form.current if e.field == "current" else form.password
        field.errors = [*field.errors, e.message]
        return _account_page(form, status=400)
    users.login_succeeded(attempt)
    others = f" {ended} other session{'' if ended == 1 else 's'} ended." if ended else ""
    flash("Your password is changed." + others, "success")
    return redirect(url_for("auth.account"))
