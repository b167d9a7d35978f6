"""Policy editor forms; Flask-WTF adds the CSRF token to each."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField
from wtforms import HiddenField
from wtforms import IntegerField
from wtforms import SelectField
from wtforms import SelectMultipleField
from wtforms import StringField
from wtforms.validators import DataRequired
from wtforms.validators import Length
from wtforms.validators import NumberRange
from wtforms.validators import Optional
from wtforms.widgets import CheckboxInput
from wtforms.widgets import ListWidget

from service.tokens import MAX_DAYS


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


class CheckboxesField(SelectMultipleField):
    """A multiple choice shown as a list of checkboxes, each with its own label."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class TokenForm(FlaskForm):
    """A new service token: its name, its roles and how many days it lives."""

    name = StringField("Name", validators=[DataRequired(), Length(max=63)])
    roles = CheckboxesField("Roles", choices=[])
    expires_days = IntegerField(
        f"Expires after (days, 1 to {MAX_DAYS}; empty: never)",
        validators=[Optional(), NumberRange(min=1, max=MAX_DAYS)],
    )
