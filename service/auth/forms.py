"""Account forms; Flask-WTF adds the CSRF token to each."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField
from wtforms import HiddenField
from wtforms import PasswordField
from wtforms.validators import DataRequired
from wtforms.validators import EqualTo
from wtforms.validators import Length


class LoginForm(FlaskForm):
    """Email and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=255)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class RegisterForm(FlaskForm):
    """Email, password and its confirmation."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=255)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField(
        "Confirm password",
        validators=[DataRequired(), EqualTo("password", message="the passwords do not match")],
    )


class LogoutForm(FlaskForm):
    """Nothing but the CSRF token: a third-party page cannot log a user out."""


class NewPasswordForm(FlaskForm):
    """A new password and its confirmation (a reset link, an invitation)."""

    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField(
        "Confirm password",
        validators=[DataRequired(), EqualTo("password", message="the passwords do not match")],
    )


class ForgotForm(FlaskForm):
    """The email of the account whose password was forgotten."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=255)])


class ResendForm(FlaskForm):
    """Nothing but the CSRF token: send the verification link again."""


class InviteForm(FlaskForm):
    """The address to invite."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=255)])
