"""Forms of the account page; Flask-WTF adds the CSRF token to each."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import IntegerField
from wtforms import PasswordField
from wtforms.validators import DataRequired
from wtforms.validators import EqualTo
from wtforms.validators import InputRequired
from wtforms.validators import Length
from wtforms.validators import NumberRange


class EndSessionForm(FlaskForm):
    """End one of the account's own sessions, named by its row id."""

    session = IntegerField(validators=[InputRequired(), NumberRange(min=1, max=2**62)])


class EndSessionsForm(FlaskForm):
    """End several sessions at once (all others, or all): only the CSRF token."""


class ChangePasswordForm(FlaskForm):
    """The current password, the new one and its confirmation."""

    current = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)])
    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField(
        "Confirm new password",
        validators=[DataRequired(), EqualTo("password", message="the passwords do not match")],
    )
