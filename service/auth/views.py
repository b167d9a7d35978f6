"""/login, /register, /logout; email verification, password reset, invitations."""

from __future__ import annotations

import logging

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

from authz import metrics
from service import proxies
from service import users
from service.auth.forms import ForgotForm
from service.auth.forms import InviteForm
from service.auth.forms import LoginForm
from service.auth.forms import LogoutForm
from service.auth.forms import NewPasswordForm
from service.auth.forms import RegisterForm
from service.auth.forms import ResendForm
from service.responses import safe_next_url

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)

#: One message for a wrong password, an unknown email and a deactivated account,
#: so the form does not reveal which accounts exist.
BAD_CREDENTIALS = "Wrong email or password."


def _start_session(user: users.User) -> None:
    # A fresh session at login: nothing from before the login survives into it.
    session.clear()
    login_user(user)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    """Show the login form; log in and go to a same-site ``next``."""
    form = LoginForm(next=request.args.get("next", ""))
    status = 200
    if form.validate_on_submit():
        address = proxies.client_address()
        if users.throttled(form.email.data, address):
            metrics.login("throttled")
            log.warning("login throttled for %r", form.email.data[:255])
            flash("Too many failed attempts. Wait a few minutes and try again.", "error")
            status = 429
        else:
            user = users.authenticate(form.email.data, form.password.data)
            if user is None:
                metrics.login("failure")
                log.info("login failed for %r", form.email.data[:255])
                users.record_failure(form.email.data, address)
                flash(BAD_CREDENTIALS, "error")
                status = 401
            else:
                metrics.login("success")
                log.info("login of %s", user.email)
                users.clear_failures(user.email)
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
def register() -> Response | str:
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
def register_invited(token: str) -> Response | str:
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
def verify_resend() -> Response:
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
def verify(token: str) -> Response | str:
    """Verify the email of a link's account (the link works once)."""
    try:
        user = users.verify_email(token)
    except users.LinkError as e:
        return _bad_link("verification", e.reason)
    log.info("email verified for %s", user.email)
    return render_template("auth/verified.html", email=user.email)


@bp.route("/password/forgot", methods=["GET", "POST"])
def forgot_password() -> Response | str:
    """Ask for a reset link; the answer is the same whether or not the account exists."""
    form = ForgotForm()
    if form.validate_on_submit():
        users.request_password_reset(form.email.data)
        return render_template("auth/forgot_sent.html")
    status = 400 if request.method == "POST" else 200
    return Response(render_template("auth/forgot.html", form=form), status=status)


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str) -> Response | str:
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
def invite() -> Response | str:
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
def logout() -> Response | str:
    """GET asks for confirmation; POST (with CSRF token) ends the session."""
    form = LogoutForm()
    if request.method == "POST" and form.validate_on_submit():
        if current_user.is_authenticated:
            # Rotating the token kills this cookie even if a copy of it is replayed.
            users.end_sessions(current_user.email)
        logout_user()
        session.clear()
        flash("You are logged out.", "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/logout.html", form=form)
