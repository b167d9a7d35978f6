"""The editor's role pickers: they start on a placeholder that fails and never offer anonymous."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from service import create_app
from service.admin.forms import CHOOSE_A_ROLE
from service.admin.forms import AssignRoleForm
from service.admin.forms import TokenForm
from tests.conftest import app_config
from tests.conftest import dispose

ROLES = ["admin", "anonymous", "auditor", "user"]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    # No database needed: forms only. CSRF off, as the check is Flask-WTF's own.
    app = create_app(app_config(tmp_path))
    app.config["WTF_CSRF_ENABLED"] = False
    yield app
    dispose(app)


def assign(app: Flask, data: dict[str, str]) -> AssignRoleForm:
    """The assign form as the view builds it, validated against a submitted ``data``."""
    with app.test_request_context("/", method="POST", data=data):
        form = AssignRoleForm()
        form.role.choices = ROLES
        form.validate()
        return form


def test_the_role_picker_starts_on_the_placeholder_and_leaves_out_anonymous(app: Flask) -> None:
    with app.test_request_context("/"):
        form = AssignRoleForm()
        form.role.choices = ROLES
        html = str(form.role())
    assert form.role.choices == [CHOOSE_A_ROLE, "admin", "auditor", "user"]
    # The first option, the one a browser shows, is the placeholder.
    assert html.index('<option value="">Choose a role</option>') < html.index('value="admin"')
    assert "selected" not in html
    assert "anonymous" not in html


@pytest.mark.parametrize(
    ("role", "error"),
    [
        ("", "choose a role"),
        ("anonymous", "Not a valid choice."),
        ("nobody", "Not a valid choice."),
    ],
)
def test_a_missing_or_unoffered_role_does_not_validate(app: Flask, role: str, error: str) -> None:
    assert assign(app, {"role": role}).role.errors == [error]


def test_an_offered_role_validates(app: Flask) -> None:
    form = assign(app, {"role": "auditor"})
    assert form.role.errors == [] and form.role.data == "auditor"


def test_the_token_form_never_offers_anonymous_and_shows_every_error_at_once(app: Flask) -> None:
    data = {"name": "", "roles": "anonymous", "expires_days": "0"}
    with app.test_request_context("/", method="POST", data=data):
        form = TokenForm()
        form.roles.choices = ROLES
        assert form.roles.choices == ["admin", "auditor", "user"]
        assert not form.validate()
        assert set(form.errors) == {"name", "roles", "expires_days"}
