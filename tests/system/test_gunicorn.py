"""Production serving: gunicorn with the shipped config module, several workers, SQLite.

Two workers write to one SQLite file at once (WAL and a busy timeout keep them from
failing each other), and SIGTERM stops the server gracefully, each worker stopping its
policy poller on the way out.
"""

from __future__ import annotations

import http.cookiejar
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.system.conftest import Server
from tests.system.conftest import clean_env
from tests.system.conftest import serve_gunicorn

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
CHEAP_HASHING = {
    "AUTHZ_ARGON2_TIME_COST": "1",
    "AUTHZ_ARGON2_MEMORY_COST": "8",
    "AUTHZ_ARGON2_PARALLELISM": "1",
}


def failed_logins(base: str, client: int, count: int) -> list[int]:
    """One browser-like client: fetch the form, then post wrong passwords; the statuses."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(base + "/login", timeout=10) as page:
        match = _CSRF.search(page.read().decode())
    assert match is not None
    statuses = []
    for n in range(count):
        form = {
            "csrf_token": match.group(1),
            "email": f"nobody-{client}-{n}@example.com",
            "password": "wrong-password-1",
        }
        data = urllib.parse.urlencode(form).encode()
        try:
            with opener.open(base + "/login", data=data, timeout=30) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as e:
            statuses.append(e.code)
    return statuses


def test_two_workers_share_sqlite_and_stop_gracefully_on_sigterm(
    tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    instance = tmp_path / "instance"
    env = clean_env(
        AUTHZ_INSTANCE_PATH=str(instance),
        AUTHZ_WORKERS="2",
        AUTHZ_LOGIN_MAX_FAILURES="1000",
        **CHEAP_HASHING,
    )
    server = serve_gunicorn(tmp_path, start_server, env)

    # Every failed login writes a throttle row: both workers write the same file at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda c: failed_logins(server.base, c, 6), range(8)))
    statuses = [status for result in results for status in result]
    assert statuses == [401] * 48, server.output()
    posts = re.findall(r"access pid=<(\d+)> POST /login 401", server.output())
    assert len(posts) == 48
    assert len(set(posts)) == 2, "both workers served the failed logins"

    with sqlite3.connect(instance / "authz.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    assert server.terminate() == 0
    output = server.output()
    assert "Traceback" not in output
    assert "database is locked" not in output
    assert len(re.findall(r"Worker \d+: policy poller and listener stopped", output)) == 2
