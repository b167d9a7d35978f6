"""Login throttling: progressive delays, Retry-After, addresses, clearing, pruning, events."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from authz import metrics
from service.extensions import db
from service.models import LoginThrottle
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import csrf_token
from tests.conftest import dispose
from tests.conftest import make_app

WRONG = "wrong-password-1"
_TOKEN = re.compile(r'value="[^"]*"')


def client_at(app: Flask, address: str) -> AuthActions:
    """Log-in actions of a browser at ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return AuthActions(client)


def wait_over(app: Flask) -> None:
    """Let every delay run out now (as if its time had passed)."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with app.app_context():
        db.session.execute(
            sa.update(LoginThrottle)
            .where(LoginThrottle.blocked_until.is_not(None))
            .values(blocked_until=past)
        )
        db.session.commit()


def stored_delay(app: Flask) -> int:
    """The longest delay a counter holds now: blocked_until - last_at, in seconds."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(LoginThrottle.blocked_until, LoginThrottle.last_at).where(
                LoginThrottle.blocked_until.is_not(None)
            )
        ).all()
        db.session.rollback()
    return max(round((until - last).total_seconds()) for until, last in rows)


def counters(app: Flask) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(sa.select(LoginThrottle.key, LoginThrottle.failures)).all()
        return dict(rows)  # type: ignore[arg-type]


@pytest.fixture
def small(tmp_path: Path) -> Flask:
    app = make_app(tmp_path, login_max_failures=3, login_max_delay=4)
    yield app
    dispose(app)


def test_delay_starts_after_the_limit_doubles_and_is_capped(small: Flask) -> None:
    auth = client_at(small, "10.1.0.1")
    assert [auth.login(USER, WRONG).status_code for _ in range(3)] == [401] * 3
    refused = auth.login(USER, USER_PASSWORD)  # even the right password waits
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    waits = []
    for _ in range(4):
        wait_over(small)
        assert auth.login(USER, WRONG).status_code == 401  # one guess per delay
        response = auth.login(USER, WRONG)
        assert response.status_code == 429
        assert 1 <= int(response.headers["Retry-After"]) <= stored_delay(small)
        # The delay as stored, not as Retry-After rounds what is left of it by the time
        # the answer is written (a busy machine can take a second between the two).
        waits.append(stored_delay(small))
    assert waits == [2, 4, 4, 4]  # doubling, capped by login_max_delay
    # After the delay the right password works and clears the account's count.
    wait_over(small)
    assert auth.login().status_code == 302
    auth.logout()
    assert [auth.login(USER, WRONG).status_code for _ in range(3)] == [401] * 3


def test_the_same_answer_whether_or_not_the_account_exists(small: Flask) -> None:
    def throttled_answer(email: str) -> tuple[int, str, str]:
        auth = client_at(small, "10.1.0.2")
        for _ in range(3):
            auth.login(email, WRONG)
        response = auth.login(email, WRONG)
        body = _TOKEN.sub("", response.get_data(as_text=True)).replace(email, "EMAIL")
        return response.status_code, response.headers.get("Retry-After", ""), body

    assert throttled_answer(USER) == throttled_answer("ghost@example.com")
    assert throttled_answer(USER)[0] == 429


def test_concurrent_spellings_of_one_email_share_its_counter(small: Flask) -> None:
    auth = client_at(small, "10.1.0.3")
    for spelling in ("User@Example.com", " user@example.com", "USER@EXAMPLE.COM"):
        assert auth.login(spelling, WRONG).status_code == 401
    assert auth.login(USER, USER_PASSWORD).status_code == 429


def test_twenty_failures_from_one_address_do_not_stop_another_user_there(app: Flask) -> None:
    attacker = client_at(app, "10.2.0.1")
    for i in range(20):
        assert attacker.login(f"victim{i % 4}@example.com", WRONG).status_code in (401, 429)
    assert client_at(app, "10.2.0.1").login(USER, USER_PASSWORD).status_code == 302


def test_address_over_its_budget_waits_but_known_users_there_do_not(tmp_path: Path) -> None:
    app = make_app(tmp_path, login_address_max_failures=5, login_address_max_delay=30)
    try:
        # The user logged in from the shared address (a proxy, an office NAT) before.
        regular = client_at(app, "10.3.0.1")
        assert regular.login().status_code == 302
        regular.logout()
        attacker = client_at(app, "10.3.0.1")
        statuses = [attacker.login(f"spray{i}@example.com", WRONG).status_code for i in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        # The known user is not held by the address's delay...
        assert client_at(app, "10.3.0.1").login().status_code == 302
        # ...a first-time user there waits the address's delay (at most 30 s), then works.
        newcomer = client_at(app, "10.3.0.1")
        response = newcomer.login(ADMIN, ADMIN_PASSWORD)
        assert response.status_code == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 30
        wait_over(app)
        assert newcomer.login(ADMIN, ADMIN_PASSWORD).status_code == 302
        # Elsewhere nobody noticed.
        assert client_at(app, "10.3.0.2").login("spray0@example.com", WRONG).status_code == 401
    finally:
        dispose(app)


def test_an_attacker_elsewhere_does_not_slow_the_owner_at_a_known_address(app: Flask) -> None:
    owner = client_at(app, "10.4.0.1")
    assert owner.login(ADMIN, ADMIN_PASSWORD).status_code == 302
    owner.logout()
    attacker = client_at(app, "198.51.100.7")
    statuses = [attacker.login(ADMIN, WRONG).status_code for _ in range(7)]
    assert statuses == [401] * 5 + [429] * 2
    assert client_at(app, "10.4.0.1").login(ADMIN, ADMIN_PASSWORD).status_code == 302
    # The attacker's counter is untouched by the owner's login.
    assert attacker.login(ADMIN, ADMIN_PASSWORD).status_code == 429


def test_guesses_from_the_owners_address_are_throttled_too(app: Flask) -> None:
    owner = client_at(app, "10.5.0.1")
    assert owner.login().status_code == 302
    owner.logout()
    neighbour = client_at(app, "10.5.0.1")
    statuses = [neighbour.login(USER, WRONG).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


def audit_actions(app: Flask) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(
            sa.text("SELECT action, detail FROM audit_log WHERE action = 'login.unthrottle'")
        ).all()
        return [(r[0], r[1]) for r in rows]


def test_cli_clears_an_account_and_an_address(app: Flask) -> None:
    runner = app.test_cli_runner()
    auth = client_at(app, "10.6.0.1")
    for _ in range(5):
        auth.login(USER, WRONG)
    assert auth.login().status_code == 429
    result = runner.invoke(args=["users", "unthrottle", USER])
    assert result.exit_code == 0, result.output
    assert "Cleared 1 login counter(s)" in result.output
    assert auth.login().status_code == 302

    spray = client_at(app, "10.6.0.2")
    for i in range(50):
        spray.login(f"s{i}@example.com", WRONG)
    assert spray.login("s99@example.com", WRONG).status_code == 429
    result = runner.invoke(args=["users", "unthrottle", "--address", "10.6.0.2"])
    assert result.exit_code == 0, result.output
    assert spray.login("s99@example.com", WRONG).status_code == 401
    assert audit_actions(app) == [
        ("login.unthrottle", USER),
        ("login.unthrottle", "address 10.6.0.2"),
    ]


@pytest.mark.parametrize("args", [[], ["a@example.com", "--address", "10.0.0.1"]])
def test_cli_wants_one_of_email_or_address(app: Flask, args: list[str]) -> None:
    result = app.test_cli_runner().invoke(args=["users", "unthrottle", *args])
    assert result.exit_code == 2
    assert "either EMAIL or --address" in result.output


def test_admin_clears_an_account_from_its_page(app: Flask) -> None:
    victim = client_at(app, "10.7.0.1")
    for _ in range(5):
        victim.login(USER, WRONG)
    assert victim.login().status_code == 429

    user = client_at(app, "10.7.0.9")
    assert user.login(ADMIN, ADMIN_PASSWORD).status_code == 302  # now the admin's browser
    page = user.client.get(f"/admin/users/{USER}")
    assert 'id="unthrottle"' in page.get_data(as_text=True)
    token = csrf_token(user.client, f"/admin/users/{USER}")
    response = user.client.post(f"/admin/users/{USER}/unthrottle", data={"csrf_token": token})
    assert response.status_code == 302
    assert victim.login().status_code == 302
    assert audit_actions(app) == [("login.unthrottle", USER)]


def test_the_admin_action_needs_csrf_and_an_admin(app: Flask, client: FlaskClient) -> None:
    plain = client_at(app, "10.8.0.1")
    assert plain.login().status_code == 302
    token = csrf_token(plain.client, "/")
    denied = plain.client.post(f"/admin/users/{ADMIN}/unthrottle", data={"csrf_token": token})
    assert denied.status_code == 403
    admin = client_at(app, "10.8.0.2")
    admin.login(ADMIN, ADMIN_PASSWORD)
    admin.client.post(f"/admin/users/{USER}/unthrottle", data={})
    assert audit_actions(app) == []


def test_old_counters_are_pruned_on_write(app: Flask) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with app.app_context():
        for i in range(5):
            db.session.add(
                LoginThrottle(key=f"acct:old{i}@example.com", failures=3, last_at=an_hour_ago)
            )
        db.session.add(LoginThrottle(key="ok:10.9.0.1|old@example.com", last_at=long_ago))
        db.session.add(LoginThrottle(key="ok:10.9.0.1|recent@example.com", last_at=an_hour_ago))
        db.session.commit()
    client_at(app, "10.9.0.2").login(USER, WRONG)
    assert set(counters(app)) == {
        "ok:10.9.0.1|recent@example.com",
        f"acct:{USER}",
        "addr:10.9.0.2",
    }


def test_a_quiet_window_starts_the_count_afresh(small: Flask) -> None:
    auth = client_at(small, "10.10.0.1")
    for _ in range(2):
        auth.login(USER, WRONG)
    with small.app_context():
        db.session.execute(
            sa.update(LoginThrottle).values(
                last_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=901)
            )
        )
        db.session.commit()
    assert [auth.login(USER, WRONG).status_code for _ in range(3)] == [401] * 3
    assert counters(small)[f"acct:{USER}"] == 3


def test_auth_events_are_logged_and_counted(
    small: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    before = metrics.snapshot()
    auth = client_at(small, "10.11.0.1")
    for _ in range(3):
        auth.login(USER, WRONG)
    auth.login(USER, WRONG)
    wait_over(small)
    auth.login()
    after = metrics.snapshot()
    for kind, grew in (
        ("login_failure", 3),
        ("lockout", 1),
        ("login_throttled", 1),
        ("login_success", 1),
    ):
        name = f"auth_event.{kind}"
        assert int(after.get(name, 0)) - int(before.get(name, 0)) == grew, kind
    err = capsys.readouterr().err
    assert f"auth event login_failure email={USER} address=10.11.0.1" in err
    assert "auth event login_throttled" in err and "retry_after=1" in err
    assert "auth event lockout" in err and "counter=acct" in err
    assert f"auth event login_success email={USER} address=10.11.0.1" in err


def test_a_forged_email_cannot_split_an_event_line(
    app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    client_at(app, "10.12.0.1").login("a@example.com\nauth event login_success", WRONG)
    lines = [line for line in capsys.readouterr().err.splitlines() if "auth event" in line]
    assert len(lines) == 1 and "login_failure" in lines[0]
