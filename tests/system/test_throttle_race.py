"""The login throttle under concurrency: a real threaded server, 16 guesses at once.

Before the throttle counted attempts ahead of the password check, 16 concurrent wrong
passwords for one email with a limit of 5 were all verified. Now each attempt is counted
in one statement before the check, so at most the limit reach the hasher, on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

import http.cookiejar
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from service.passwords import Passwords
from tests.conftest import USER
from tests.conftest import Backend
from tests.conftest import dispose
from tests.conftest import make_app

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
LIMIT = 5
GUESSES = 16


class CountingPasswords(Passwords):
    """The real hasher, counting how many passwords reach verification."""

    def __init__(self, inner: Passwords) -> None:
        self.__dict__.update(inner.__dict__)
        self.verified = 0
        self._lock = threading.Lock()

    def verify(self, *args: Any, **kwargs: Any) -> bool:
        with self._lock:
            self.verified += 1
        return super().verify(*args, **kwargs)


@pytest.fixture
def served(tmp_path: Path, database: Backend) -> Iterator[tuple[Flask, str]]:
    # A long first delay, so a slow machine cannot let a 6th guess in legitimately.
    app = make_app(tmp_path, login_max_failures=LIMIT, login_delay=120, db_pool_size=20)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        dispose(app)


def prepared(base: str) -> tuple[urllib.request.OpenerDirector, str]:
    """A browser-like client that has fetched the login form: its opener and CSRF token."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with opener.open(base + "/login", timeout=30) as page:
        match = _CSRF.search(page.read().decode())
    assert match is not None
    return opener, match.group(1)


def test_concurrent_wrong_passwords_reach_verification_at_most_the_limit(
    served: tuple[Flask, str],
) -> None:
    app, base = served
    counting = CountingPasswords(app.extensions["authz.passwords"])
    app.extensions["authz.passwords"] = counting
    clients = [prepared(base) for _ in range(GUESSES)]
    start = threading.Barrier(GUESSES)

    def guess(client: tuple[urllib.request.OpenerDirector, str]) -> tuple[int, str | None]:
        opener, token = client
        form = {"csrf_token": token, "email": USER, "password": "wrong-password-1"}
        start.wait()
        try:
            with opener.open(base + "/login", urllib.parse.urlencode(form).encode(), 60) as r:
                return r.status, None
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Retry-After")

    with ThreadPoolExecutor(max_workers=GUESSES) as pool:
        results = list(pool.map(guess, clients))

    statuses = sorted(status for status, _ in results)
    assert counting.verified <= LIMIT, statuses
    assert statuses == [401] * LIMIT + [429] * (GUESSES - LIMIT)
    assert all(int(wait) >= 1 for status, wait in results if status == 429 and wait)
    assert all(wait for status, wait in results if status == 429), "Retry-After on every 429"
