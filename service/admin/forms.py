"""Policy editor forms; Flask-WTF adds the CSRF token to each."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from flask_wtf.file import FileRequired
from wtforms import BooleanField
from wtforms import HiddenField
from wtforms import IntegerField
from wtforms import SelectField
from wtforms import SelectMultipleField
from wtforms import StringField
from wtforms.validators import AnyOf
from wtforms.validators import DataRequired
from wtforms.validators import Length
from wtforms.validators import NumberRange
from wtforms.validators import Optional
from wtforms.widgets import CheckboxInput
from wtforms.widgets import ListWidget

from authz import ANONYMOUS
from authz.expectations import MAX_NOTE
from authz.rules import MAX_VALUE_LENGTH
from service.tokens import MAX_DAYS

#: The first entry of a role picker: nothing chosen, and choosing nothing does not validate.
CHOOSE_A_ROLE = ("", "Choose a role")


def assignable(roles: Iterable[Any]) -> list[Any]:
    """The roles that may be given to an account or a token: every one but ``anonymous``.

    Everyone holds ``anonymous`` already (it is the subject of a request with no account,
    and roles inherit it); offering it would only add a row that changes nothing.
    """
    return [r for r in roles if (r[0] if isinstance(r, tuple) else r) != ANONYMOUS]


class RoleField(SelectField):
    """A role picker that starts on "Choose a role" and never offers ``anonymous``.

    Views set ``choices`` to the roles they know; the field drops ``anonymous`` and puts
    the placeholder first, so a form submitted without a choice fails validation with
    a message next to the field rather than assigning the first role in the list.
    """

    def __init__(self, label: str, **kwargs: Any) -> None:
        super().__init__(label, validators=[DataRequired(message="choose a role")], **kwargs)

    @property
    def choices(self) -> list[Any]:
        """The placeholder, then the assignable roles."""
        return self._roles

    @choices.setter
    def choices(self, roles: Iterable[Any] | None) -> None:
        kept = [r for r in assignable(roles or []) if r != CHOOSE_A_ROLE and r != ""]
        self._roles = [CHOOSE_A_ROLE, *kept]


class RoleChoicesField(SelectMultipleField):
    """Roles chosen as a list of checkboxes, each with its own label; never ``anonymous``."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()

    @property
    def choices(self) -> list[Any]:
        """The assignable roles."""
        return self._roles

    @choices.setter
    def choices(self, roles: Iterable[Any] | None) -> None:
        self._roles = assignable(roles or [])


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

    role = RoleField("Assign a role", choices=[])
    revision = HiddenField()


class ConfirmForm(FlaskForm):
    """A destructive action, confirmed (the CSRF token is all it carries)."""

    revision = HiddenField()


class TokenForm(FlaskForm):
    """A new service token: its name, its roles and how many days it lives."""

    name = StringField("Name", validators=[DataRequired(), Length(max=63)])
    roles = RoleChoicesField("Roles", choices=[])
    expires_days = IntegerField(
        f"Expires after (days, 1 to {MAX_DAYS}; empty: never)",
        validators=[Optional(), NumberRange(min=1, max=MAX_DAYS)],
    )


class PolicyTestForm(FlaskForm):
    """A new policy test: a request and the outcome the policy must keep giving it."""

    subject = StringField(
        "Subject (email, role, anonymous or token:NAME)",
        validators=[DataRequired(), Length(max=MAX_VALUE_LENGTH)],
    )
    method = StringField("Method", default="GET", validators=[DataRequired(), Length(max=32)])
    path = StringField("Path", validators=[DataRequired(), Length(max=MAX_VALUE_LENGTH)])
    outcome = SelectField("Expected outcome", choices=["allow", "deny"])
    note = StringField("Note (why it matters)", validators=[Length(max=MAX_NOTE)])


class LoadTestsForm(FlaskForm):
    """A policy tests file to store (CSV: subject, method, path, outcome, note)."""

    file = FileField("Policy tests file (CSV)", validators=[FileRequired("choose a file")])
    replace = BooleanField("Replace: remove the stored tests the file does not hold")
    allow_empty = BooleanField("Allow an empty file (with Replace: remove every stored test)")


class SaveTriedForm(FlaskForm):
    """A tried request, saved as a policy test of what the policy decides now."""

    subject = HiddenField(validators=[DataRequired(), Length(max=MAX_VALUE_LENGTH)])
    method = HiddenField(validators=[DataRequired(), Length(max=32)])
    path = HiddenField(validators=[DataRequired(), Length(max=MAX_VALUE_LENGTH)])
    #: The outcome the page showed: the decision is made again at the click, and the
    #: test is stored only when it is still this one.
    outcome = HiddenField(validators=[DataRequired(), AnyOf(("allow", "deny"))])
    note = StringField("Note (optional)", validators=[Length(max=MAX_NOTE)])
