"""An acknowledged revoke reaches every worker of every instance, bad stored rows or not.

Real processes: four servers (instance A's two workers and instance B's two, each its
own process running create_app, as gunicorn workers are) on one PostgreSQL schema. Two
malformed rows are put in the table with raw SQL, behind the service's back; then a
rule is revoked through instance A's API, and every worker must deny within a second.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from authz import Rule
from service import create_app
from service.bootstrap import init_database
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import FAST_HASHING
from tests.conftest import app_config
from tests.conftest import dispose

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
PROBE = Rule.of("p", "anonymous", "/probe", "GET", "allow")
#: Rows the write path refuses: one value too many (Casbin's "invalid policy size",
#: which used to grant) and one too few (which used to stop propagation).
MALFORMED = (
    "insert into casbin_rule(ptype,v0,v1,v2,v3,v4) values ('p','user','/probe','GET','allow','x')",
    "insert into casbin_rule(ptype,v0,v1,v2) values ('p','user','/zzz','GET')",
)
DEADLINE = 1.0
SERVER = """
import sys
from werkzeug.serving import make_server
from service import create_app
server = make_server("127.0.0.1", 0, create_app(), threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Client:
    """A cookie-keeping HTTP client that shows redirects as they are."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect()
        )

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        # S310: the URL is always this test's own local server over http.
        req = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with self.opener.open(req, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def status(self, path: str) -> int:
        return self.request("GET", path)[0]


def schema_url(pg_url: str, schema: str) -> str:
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def database(tmp_path: Path, pg_url: str, pg_schema: str) -> str:
    url = schema_url(pg_url, pg_schema)
    app = create_app(app_config(tmp_path, database_url=url))
    with app.app_context():
        init_database(admin_email=ADMIN, admin_password=ADMIN_PASSWORD, actor="test")
        engine = app.extensions["authz"]
        from authz.engine import Change

        engine.apply(Change.adding(PROBE), actor="test", source="cli")
    dispose(app)
    return url


@pytest.fixture
def workers(tmp_path: Path, database: str) -> Iterator[dict[str, Client]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")},
        "AUTHZ_ENV": "testing",
        "AUTHZ_DATABASE_URL": database,
        "AUTHZ_SECRET_KEY": "propagation-test-secret-key-of-enough-length",
        "AUTHZ_POLL_INTERVAL": "0.5",
        "PYTHONPATH": str(REPO),
        **{f"AUTHZ_{k.upper()}": str(v) for k, v in FAST_HASHING.items()},
    }
    names = ("A1", "A2", "B1", "B2")
    processes: list[subprocess.Popen[str]] = []
    clients: dict[str, Client] = {}
    try:
        for name in names:
            instance = tmp_path / name
            instance.mkdir()
            process = subprocess.Popen(
                [sys.executable, "-c", SERVER],
                cwd=instance,
                env={**env, "AUTHZ_INSTANCE_PATH": str(instance)},
                stdout=subprocess.PIPE,
                text=True,
            )
            processes.append(process)
        for name, process in zip(names, processes, strict=True):
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.strip().isdigit(), f"worker {name} did not start"
            clients[name] = Client(int(line))
        yield clients
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()


def login(client: Client) -> str:
    """Log in as the admin through the form; return the CSRF token for API writes."""
    _, page = client.request("GET", "/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token
    form = f"email={ADMIN}&password={ADMIN_PASSWORD}&csrf_token={token.group(1)}".replace(
        "@", "%40"
    )
    status, _ = client.request(
        "POST",
        "/login",
        form.encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 302
    status, body = client.request("GET", "/api/v1/csrf")
    assert status == 200
    return str(json.loads(body)["csrf_token"])


def test_a_revoke_reaches_every_worker_within_a_second_despite_malformed_rows(
    workers: dict[str, Client], database: str
) -> None:
    # Allowed everywhere: no route behind the path, so 404 (a denial would be 302).
    assert {name: c.status("/probe") for name, c in workers.items()} == dict.fromkeys(workers, 404)
    engine = sa.create_engine(database)
    try:
        with engine.begin() as conn:
            for statement in MALFORMED:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()

    a1 = Client(int(workers["A1"].base.rsplit(":", 1)[1]))  # the admin's own cookies
    csrf = login(a1)
    status, body = a1.request("GET", "/api/v1/policy/rules")
    revision = json.loads(body)["revision"]
    status, body = a1.request(
        "DELETE",
        f"/api/v1/policy/rules/{PROBE.id}?revision={revision}",
        headers={"X-CSRFToken": csrf},
    )
    assert status == 200, body
    acknowledged = time.monotonic()

    pending = dict(workers)
    took: dict[str, float] = {}
    while pending:
        for name, client in list(pending.items()):
            status = client.status("/probe")
            if status == 302:  # an anonymous visitor sent to the login page: denied
                took[name] = time.monotonic() - acknowledged
                del pending[name]
            else:
                assert status == 404, f"{name} answered {status}"
        assert time.monotonic() - acknowledged < DEADLINE, f"still allowing: {sorted(pending)}"
        time.sleep(0.02)
    assert set(took) == set(workers)
    # The malformed rows were skipped, not obeyed and not fatal: the service still serves.
    for client in workers.values():
        assert client.status("/login") == 200


# -- a large load beside an editor, on PostgreSQL ------------------------------------------


def test_a_large_load_stages_its_rows_without_holding_up_an_editor(
    engine: Any, other_engine: Any, store: Any
) -> None:
    from authz.engine import STAGE_FROM
    from authz.engine import Change

    rows = [Rule.of("p", f"role{i % 7}", f"/bulk/{i}/*", "GET", "allow") for i in range(STAGE_FROM)]
    edit = Rule.of("p", "user", "/editor", "GET", "allow")
    waited: list[float] = []
    fills: list[str] = []

    def editor(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "CREATE TEMPORARY TABLE authz_stage_add" in statement:
            fills.append(statement)
        if not waited and "CREATE TEMPORARY TABLE authz_stage_add" in statement:
            # The load is staging: the policy lock is free, an editor's write goes through.
            start = time.monotonic()
            other_engine.apply(Change(add=(edit, rows[0])), actor="ed", source="api")
            waited.append(time.monotonic() - start)

    sa.event.listen(store.engine, "before_cursor_execute", editor)
    applied = engine.apply(Change(add=tuple(rows)), actor="t", source="cli")
    assert waited and waited[0] < 1.0
    assert len(fills) == 1  # rebased on the editor's write, not staged all over again
    assert applied.revision == 3 and rows[0] not in applied.added
    revision, stored = store.load()
    assert revision == 3 and len(stored) == len(set(stored))
    assert edit in stored and set(rows) <= set(stored)
    assert sorted(stored) == sorted(engine.rules())
    other_engine.refresh()
    assert sorted(other_engine.rules()) == sorted(stored)
