"""Forms that create: a role with its first rule, an account; and account state changes."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms import PasswordField
from wtforms import SelectField
from wtforms import StringField
from wtforms.validators import AnyOf
from wtforms.validators import DataRequired
from wtforms.validators import Length

from service.admin.forms import RoleChoicesField


class RoleForm(FlaskForm):
    """A new role: its name and its first rule (a role exists while a row names it)."""

    role = StringField("Role name", validators=[DataRequired(), Length(max=64)])
    path = StringField(
        "Path pattern of its first rule", validators=[DataRequired(), Length(max=255)]
    )
    methods = StringField("Methods (regex)", default="GET", validators=[DataRequired()])
    effect = SelectField("Effect", choices=["allow", "deny"])


class AccountForm(FlaskForm):
    """A new account, created verified by the admin who vouches for the address."""

    email = StringField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    roles = RoleChoicesField("Roles (none ticked: the default role)", choices=[])


class StateForm(FlaskForm):
    """Set an account to a state: the state is chosen when the page is shown, never a toggle."""

    active = HiddenField(validators=[AnyOf(["0", "1"], message="say which state to set")])


class PasswordForm(FlaskForm):
    """A new password an admin sets for an account (every session of it ends)."""

    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
