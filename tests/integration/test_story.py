"""The original application's story, step by step, as one end-to-end walk."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import AuthActions
from tests.integration import mailbox


def test_visitor_registers_uses_home_is_refused_admin_then_admin_gets_in(
    client: FlaskClient, auth: AuthActions
) -> None:
    # An anonymous visitor asking for / is sent to the login page with next=/.
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/"

    # Registering creates an account with the default role and logs it in.
    response = auth.register("new@example.com", "a-long-password")
    assert response.status_code == 302
    assert response.headers["Location"] == "/verify/sent"
    # They open the verification link from their mail.
    assert client.get(mailbox.last_link(client.application, "new@example.com")).status_code == 200
    home = client.get("/")
    assert home.status_code == 200
    page = home.get_data(as_text=True)
    assert "new@example.com" in page  # the navigation bar shows who is logged in
    assert 'action="/logout"' in page
    assert "user" in page

    # A user asking for /admin/ gets a 403 page that says why, with a link home.
    response = client.get("/admin/")
    assert response.status_code == 403
    text = response.get_data(as_text=True)
    assert "new@example.com" in text and "may not GET /admin/" in text
    assert 'href="/"' in text

    # Logging out ends the session: / redirects to the login page again.
    assert auth.logout().status_code == 302
    assert client.get("/").status_code == 302

    # The admin logs in through ?next=/admin/ and lands on the admin page.
    response = auth.login(ADMIN, ADMIN_PASSWORD, next="/admin/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    admin_page = client.get("/admin/")
    assert admin_page.status_code == 200
    assert "Policy revision" in admin_page.get_data(as_text=True)
    assert client.get("/").status_code == 200  # admin inherits user
