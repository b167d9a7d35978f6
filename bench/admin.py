"""Admin pages and API GET endpoints at a bench shape: how long each one answers.

Fills a database with the shape's rows (and one account per user of the shape), logs in
as an admin through the real form and times, in process through the Flask test client,
a GET of every admin page and API read endpoint (lists with and without filters, search
and the last page, a big role, a user, who-can-reach, try-a-request, audit, tokens, a
subject's roles and permissions, openapi), then one POST of each edit kind. Prints the
first, median and max milliseconds per route, and flags those over the budget.

    python bench/admin.py [--database URL] [--shape huge] [--repeat 5]

The default database is a fresh SQLite file in a temporary folder. A PostgreSQL URL
(``postgresql+psycopg://postgres@127.0.0.1:5432/NAME``) must name an empty database;
the rows go in by COPY there.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The script's own folder first on the path would shadow the standard library's http
# with bench/http.py: the repository's root takes its place.
sys.path[0] = str(ROOT)

from authz.store import VALUE_COLUMNS  # noqa: E402
from authz.store import PolicyStore  # noqa: E402
from authz.store import rule_table  # noqa: E402
from bench.shapes import SHAPES  # noqa: E402
from service import create_app  # noqa: E402
from service import users  # noqa: E402
from service.bootstrap import init_database  # noqa: E402
from service.extensions import db  # noqa: E402
from service.models import User  # noqa: E402

ADMIN, PASSWORD = "bench-admin@example.com", "bench admin password 1"
BUDGET_MS = 300.0
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def rss_mb() -> float:
    """Resident set size of this process, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def fill(store: PolicyStore, rows: Any, url: str) -> None:
    """Insert the rows in bulk: COPY on PostgreSQL, one executemany on SQLite."""
    if url.startswith("postgresql"):
        raw = store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("SET LOCAL statement_timeout = 0")  # one COPY of a million rows
            columns = ", ".join(["ptype", *VALUE_COLUMNS])
            with cursor.copy(f"COPY {rule_table.name} ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for rule in rows:
                    values = list(rule.values) + [None] * (len(VALUE_COLUMNS) - len(rule.values))
                    copy.write_row([rule.ptype, *values])
            raw.commit()
        finally:
            raw.close()
        return
    with store.transaction() as session:
        store.insert_rules(session, rows)


def add_accounts(emails: list[str], password_hash: str) -> None:
    """One verified, active account per email (one hash for all: the bench never logs in
    as them)."""
    now = dt_now()
    table = User.__table__
    batch = 10_000
    with db.engine.begin() as conn:
        for start in range(0, len(emails), batch):
            conn.execute(
                table.insert(),
                [
                    {
                        "email": e,
                        "password_hash": password_hash,
                        "active": True,
                        "session_token": f"bench-{start + i}",
                        "created_at": now,
                        "verified_at": now,
                    }
                    for i, e in enumerate(emails[start : start + batch])
                ],
            )


def dt_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def timed(call: Callable[[], Any], repeat: int) -> tuple[list[float], int]:
    """Milliseconds of each call (the first one included) and the last status."""
    samples = []
    status = 0
    for _ in range(repeat):
        start = time.perf_counter()
        response = call()
        samples.append((time.perf_counter() - start) * 1000)
        status = response.status_code
    return samples, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="", help="SQLAlchemy URL of an empty database")
    parser.add_argument("--shape", default="huge", choices=sorted(SHAPES))
    parser.add_argument("--repeat", type=int, default=5, help="GETs per route")
    parser.add_argument("--only", default="", help="time only the routes whose name has this")
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    folder = Path(tempfile.mkdtemp(prefix="bench-admin-"))
    url = args.database or f"sqlite:///{folder / 'admin.db'}"
    app = create_app(
        {
            "env": "testing",
            "instance_path": str(folder / "instance"),
            "database_url": url,
            "secret_key": "bench-secret-key",
            "poll_interval": 0,
            "argon2_time_cost": 1,
            "argon2_memory_cost": 8,
            "argon2_parallelism": 1,
            # Loading a million rows on a busy machine may take longer than the 5 s a
            # request's statement gets; pages are timed in milliseconds all the same.
            "db_statement_timeout": 300.0,
        }
    )
    with app.app_context():
        init_database(admin_email=ADMIN, admin_password=PASSWORD, actor="bench")
        engine = users.engine()
        start = time.perf_counter()
        fill(engine.store, shape.rows(), url)
        emails = sorted({r.values[0] for r in shape.rows() if r.ptype == "g"})
        add_accounts(emails, users.passwords().hash("not used by the bench 1"))
        filled = time.perf_counter() - start
        gc.collect()
        before = rss_mb()
        start = time.perf_counter()
        engine.load()
        loaded = time.perf_counter() - start
        gc.collect()
        print(
            f"{args.shape}: {len(engine.snapshot.ruleset):,} rows, {len(emails):,} accounts on"
            f" {url.split(':')[0]}; filled in {filled:.1f} s, loaded in {loaded:.1f} s"
            f" (+{rss_mb() - before:.0f} MB)"
        )
        snapshot = engine.snapshot
        last_rule = next(r for r in reversed(snapshot.rules) if r.ptype == "p")
        last_link = next(r for r in reversed(snapshot.rules) if r.ptype == "g")
        teams = Counter(r.values[1] for r in snapshot.rules if r.ptype == "g")
        big_team, other_team, third_team = (t for t, _ in teams.most_common(3))
        member = last_link.values[0]
        # A row no page shows before it is asked for by id: the id index's first build.
        middle = [r for r in snapshot.rules[len(snapshot.rules) // 2 :][:100] if r.ptype == "p"]
        unlisted, unlisted_too = middle[0], middle[-1]
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    answer = client.post("/login", data={"email": ADMIN, "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 302, answer.status_code
    csrf = client.get("/api/v1/csrf").get_json()["csrf_token"]

    literal = member.split("@")[0].removeprefix("user")
    gets = {
        "/admin/": "/admin/",
        "rules": "/admin/rules",
        "rules q": "/admin/rules?q=docs/3",
        "rules subject": f"/admin/rules?subject={member}",
        "rules last page": "/admin/rules?page=1000000",
        "roles": "/admin/roles",
        "role (big team)": f"/admin/roles/{big_team}",
        "role user": "/admin/roles/user",
        "role new form": "/admin/roles/new",
        "rule new form": "/admin/rules/new",
        "rule edit form": f"/admin/rules/{last_rule.id}/edit",
        "rule delete form": f"/admin/rules/{last_rule.id}/delete",
        "rule edit form (unlisted, hint)": (
            f"/admin/rules/{unlisted.id}/edit?subject={unlisted.values[0]}"
        ),
        "users": "/admin/users",
        "users q": "/admin/users?q=user99",
        "users last page": "/admin/users?page=1000000",
        "user": f"/admin/users/{member}",
        "user admin": f"/admin/users/{ADMIN}",
        "user new form": "/admin/users/new",
        "tokens": "/admin/tokens",
        "audit": "/admin/audit",
        "audit actor": "/admin/audit?actor=bench",
        "try": f"/admin/try?subject={member}&path=/users/{literal}/docs/1&method=GET",
        "reach (none)": "/admin/reach",
        "reach literal": f"/admin/reach?path=/users/{literal}/docs/1&method=GET",
        "reach pattern": f"/admin/reach?path=/users/{literal}/files/7/a.pdf&method=GET",
        "reach team": "/admin/reach?path=/teams/7/board&method=GET",
        "api rules": "/api/v1/policy/rules",
        "api rules subject": f"/api/v1/policy/rules?subject={member}",
        "api rules q": "/api/v1/policy/rules?q=projects/5",
        "api rules effect": "/api/v1/policy/rules?effect=deny",
        "api rules last page": "/api/v1/policy/rules?page=5005&per_page=200",
        "api rule": f"/api/v1/policy/rules/{last_rule.id}",
        "api rule (unlisted id)": f"/api/v1/policy/rules/{unlisted_too.id}",
        "api links": "/api/v1/policy/roles",
        "api links role": f"/api/v1/policy/roles?role={big_team}",
        "api links member": f"/api/v1/policy/roles?member={member}",
        "api links last page": "/api/v1/policy/roles?page=501&per_page=200",
        "api link": f"/api/v1/policy/roles/{last_link.id}",
        "api members": f"/api/v1/policy/roles/{big_team}/members",
        "api subject roles": f"/api/v1/subjects/{member}/roles",
        "api subject perms": f"/api/v1/subjects/{member}/permissions",
        "api role perms": f"/api/v1/subjects/{big_team}/permissions",
        "api users": "/api/v1/users",
        "api users last page": "/api/v1/users?page=501&per_page=200",
        "api user": f"/api/v1/users/{member}",
        "api tokens": "/api/v1/tokens",
        "api audit": "/api/v1/audit",
        "api openapi": "/api/v1/openapi.json",
    }
    results: list[tuple[str, list[float], int]] = []
    slow: list[str] = []
    print(f"{'route':34} {'status':>6} {'first':>9} {'median':>9} {'max':>9}  (ms)", flush=True)

    def report(name: str, samples: list[float], status: int) -> None:
        """Print one route's line as soon as it is measured."""
        results.append((name, samples, status))
        rest = samples[1:] or samples
        flag = ""
        if max(samples) > BUDGET_MS:
            flag = "  OVER" if max(rest) > BUDGET_MS else "  over (first only)"
            slow.append(name)
        print(
            f"{name:34} {status:>6} {samples[0]:9.1f} {statistics.median(rest):9.1f}"
            f" {max(rest):9.1f}{flag}",
            flush=True,
        )

    gets = {k: v for k, v in gets.items() if args.only in k}
    for name, path in gets.items():
        samples, status = timed(lambda p=path: client.get(p), args.repeat)  # type: ignore[misc]
        report(name, samples, status)

    headers = {"X-CSRFToken": csrf}
    new_rule = {"subject": "team7", "path": "/bench/new", "methods": "GET", "effect": "allow"}
    posts: list[tuple[str, Callable[[], Any]]] = []

    def api_add() -> Any:
        return client.post("/api/v1/policy/rules", json=new_rule, headers=headers)

    def api_edit() -> Any:
        from authz import Rule

        old = Rule("p", ("team7", "/bench/new", "GET", "allow"))
        body = {**new_rule, "path": "/bench/edited"}
        return client.put(f"/api/v1/policy/rules/{old.id}", json=body, headers=headers)

    def api_delete() -> Any:
        from authz import Rule

        old = Rule("p", ("team7", "/bench/edited", "GET", "allow"))
        return client.delete(f"/api/v1/policy/rules/{old.id}", headers=headers)

    def api_assign() -> Any:
        body = {"member": member, "role": other_team}
        return client.post("/api/v1/policy/roles", json=body, headers=headers)

    def form_add() -> Any:
        data = {
            "subject": "team9",
            "path": "/bench/form",
            "methods": "GET",
            "effect": "allow",
            "csrf_token": csrf,
        }
        return client.post("/admin/rules/new", data=data)

    def form_assign() -> Any:
        data = {"role": third_team, "csrf_token": csrf}
        return client.post(f"/admin/users/{member}/roles", data=data)

    posts = [
        ("POST api rule add", api_add),
        ("PUT api rule edit", api_edit),
        ("DELETE api rule", api_delete),
        ("POST api role assign", api_assign),
        ("POST form rule add", form_add),
        ("POST form role assign", form_assign),
    ]
    for name, call in posts:
        samples, status = timed(call, 1)
        report(name, samples, status)
    # After the writes: the pages read structures carried along from the old snapshot.
    again = ("roles", "role (big team)", "reach literal", "api members", "rules last page", "user")
    for name in (n for n in again if n in gets):
        samples, status = timed(lambda p=gets[name]: client.get(p), args.repeat)  # type: ignore[misc]
        report(f"{name} (after writes)", samples, status)

    print(f"{len(slow)} of {len(results)} over {BUDGET_MS:.0f} ms: {', '.join(slow) or 'none'}")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


if __name__ == "__main__":
    main()
