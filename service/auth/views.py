"""/login, /register, /logout."""

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
from service import users
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
