"""Policy editor forms; Flask-WTF adds the CSRF token to each."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField
from wtforms import HiddenField
from wtforms import SelectField
from wtforms import StringField
from wtforms.validators import DataRequired
from wtforms.validators import Length


class RuleForm(FlaskForm):
    """One p row: subject, path pattern, methods, effect."""

    subject = StringField("Subject (role or email)", validators=[DataRequired(), Length(max=255)])
    path = StringField("Path pattern", validators=[DataRequired(), Length(max=255)])
    methods = StringField("Methods (regex)", default="GET", validators=[DataRequired()])
    effect = SelectField("Effect", choices=["allow", "deny"])
    revision = HiddenField()
    confirm_self = BooleanField("I understand this change takes away my own access")


class AssignRoleForm(FlaskForm):
    """Give a user a role."""

    role = SelectField("Role", choices=[])
    revision = HiddenField()


class ConfirmForm(FlaskForm):
    """A destructive action, confirmed (the CSRF token is all it carries)."""

    revision = HiddenField()
