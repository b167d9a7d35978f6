"""/metrics under gunicorn with two workers: a scrape answered by one worker sums both.

Real processes: gunicorn, two workers, the multiprocess folder in the test's tmp folder.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service import create_app
from service.bootstrap import init_database
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import app_config
from tests.conftest import dispose

_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    """A gunicorn server on 127.0.0.1 and a cookie-keeping client for it."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def login(self, email: str, password: str) -> None:
        status, page = self.get("/login")
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        assert status == 200 and token
        data = urllib.parse.urlencode(
            {"email": email, "password": password, "csrf_token": token[1]}
        ).encode()
        with self.opener.open(self.base + "/login", data=data, timeout=10) as response:
            assert response.status == 200 and not response.url.endswith("/login")

    def scrape(self) -> dict[str, float]:
        status, text = self.get("/metrics")
        assert status == 200, status
        return {m[1] + (m[2] or ""): float(m[3]) for m in _SAMPLE.finditer(text)}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = app_config(tmp_path)
    app = create_app(config)
    with app.app_context():
        init_database(admin_email=ADMIN, admin_password=ADMIN_PASSWORD, actor="test")
    dispose(app)
    prometheus = tmp_path / "prometheus"
    prometheus.mkdir()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from service.metrics import child_exit  # noqa: F401\n")
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(prometheus),
        "AUTHZ_ENV": "testing",
        "AUTHZ_DATABASE_URL": config["database_url"],
        "AUTHZ_SECRET_KEY": config["secret_key"],
        "AUTHZ_INSTANCE_PATH": config["instance_path"],
        "AUTHZ_ARGON2_TIME_COST": "1",
        "AUTHZ_ARGON2_MEMORY_COST": "8",
        "AUTHZ_ARGON2_PARALLELISM": "1",
    }
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(conf),
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "service:create_app()",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    site = Site(port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if site.get("/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield site
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_scrape_sums_both_workers(site: Site) -> None:
    site.login(ADMIN, ADMIN_PASSWORD)
    allow = 'authz_decisions_total{outcome="allow",source="middleware"}'
    time.sleep(1.5)  # the login's requests are in both workers' files by now
    before = site.scrape()
    # Concurrent requests, so both (synchronous) workers take some; each says who it is.
    pids: set[int] = set()
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        deadline = time.monotonic() + 30
        while len(pids) < 2:
            assert time.monotonic() < deadline, f"only worker(s) {pids} answered"
            results = list(pool.map(lambda _: site.get("/readyz"), range(16)))
            sent += len(results)
            for status, body in results:
                assert status == 200, body
                pids.add(int(re.search(r'"pid":\s*(\d+)', body)[1]))  # type: ignore[index]
    # Each worker copies its counts into its file every second; a scrape (by either
    # worker) must then show every request exactly once, its own included.
    scrapes = 0
    deadline = time.monotonic() + 10
    while True:
        after = site.scrape()
        scrapes += 1
        grew = after[allow] - before[allow]
        assert grew <= sent + scrapes, "a request was counted twice"
        if grew == sent + scrapes:
            break
        assert time.monotonic() < deadline, f"{grew} of {sent + scrapes} decisions counted"
        time.sleep(0.3)
    # Gauges are per worker (label pid): both workers hold the same revision.
    revisions = {
        name: value for name, value in after.items() if name.startswith("authz_policy_revision")
    }
    assert {f'authz_policy_revision{{pid="{pid}"}}' for pid in pids} <= set(revisions)
    assert len(set(revisions.values())) == 1
    assert after['authz_logins_total{outcome="success"}'] == 1
    histogram = 'authz_decision_seconds_count{source="middleware"}'
    assert after[histogram] >= after[allow]
