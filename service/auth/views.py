"""/login, /register, /logout, and /account (sessions and password)."""

from __future__ import annotations

import logging

from flask import Blueprint
from flask import Response
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
from service import responses
from service import users
from service.auth.account_forms import ChangePasswordForm
from service.auth.account_forms import EndSessionForm
from service.auth.account_forms import EndSessionsForm
from service.auth.forms import LoginForm
from service.auth.forms import LogoutForm
from service.auth.forms import RegisterForm
from service.events import Event
from service.events import auth_event
from service.responses import safe_next_url

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)

#: One message for a wrong password, an unknown email and a deactivated account,
#: so the form does not reveal which accounts exist.
BAD_CREDENTIALS = "Wrong email or password."


def _start_session(user: users.User) -> None:
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
def login() -> Response | str:
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


@bp.route("/register", methods=["GET", "POST"])
def register() -> Response | str:
    """Create an account with the default role and log it in."""
    form = RegisterForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = users.create(
                form.email.data,
                form.password.data,
                actor=form.email.data.strip().lower(),
                source="web",
                action="user.register",
            )
        except users.AccountError as e:
            field = form.password if e.field == "password" else form.email
            field.errors = [*field.errors, e.message]
            status = 400
        else:
            _start_session(user)
            flash(f"Welcome, {user.email}.", "success")
            return redirect(url_for("pages.home"))
    elif request.method == "POST":
        status = 400
    return Response(render_template("auth/register.html", form=form), status=status)


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Response | str:
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


def _me() -> users.sessions.SessionUser | None:
    """The logged-in account, or None (a policy may let visitors reach these pages)."""
    user = current_user._get_current_object()
    return user if user is not None and user.is_authenticated else None


def _account_page(password_form: ChangePasswordForm | None = None, status: int = 200) -> Response:
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
def account() -> Response:
    """The account page: this account's sessions (one per device) and a password change."""
    return _account_page()


@bp.post("/account/sessions/end")
def end_session() -> Response:
    """End one of this account's sessions (this device's too: that is a logout)."""
    me = _me()
    form = EndSessionForm()
    if me is None:
        return responses.login_required()
    if not form.validate_on_submit():
        flash("Not ended: the form was incomplete or expired; try again.", "error")
        return redirect(url_for("auth.account"))
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
def end_other_sessions() -> Response:
    """End every session of this account but this device's."""
    me = _me()
    form = EndSessionsForm()
    if me is None:
        return responses.login_required()
    if not form.validate_on_submit():
        flash("Not ended: the form expired; try again.", "error")
        return redirect(url_for("auth.account"))
    ended = users.end_sessions_of(me.id, me.email, actor=me.email, source="web", keep=me.session_id)
    flash(f"Ended {ended} other session{'' if ended == 1 else 's'}.", "success")
    return redirect(url_for("auth.account"))


@bp.post("/account/sessions/end-all")
def logout_everywhere() -> Response:
    """Log out everywhere: end every session of this account, this device's included."""
    me = _me()
    form = EndSessionsForm()
    if me is None:
        return responses.login_required()
    if not form.validate_on_submit():
        flash("Not ended: the form expired; try again.", "error")
        return redirect(url_for("auth.account"))
    users.end_sessions_of(me.id, me.email, actor=me.email, source="web", action="user.logout_all")
    _forget_session("You are logged out on every device.")
    return redirect(url_for("auth.login"))


@bp.post("/account/password")
def change_password() -> Response:
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
