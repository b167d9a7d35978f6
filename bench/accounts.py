"""Account writes at scale: a registration, a logout and a one-row rule change, timed
through the whole request (middleware, views, database) with 100,000 accounts and the
110,000-row large policy.

Each timing is the server's time for one request in this process (Flask's test client,
no network). A registration hashes a password with argon2id; that hash is timed on its
own inside each request and taken out, which leaves the registration's own work.
The baseline is a GET of a page the policy allows, in the same process.

    python bench/accounts.py [--rounds 30] [--database URL-of-an-empty-database]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import sqlalchemy as sa  # noqa: E402

from bench.shapes import SHAPES  # noqa: E402

ADMIN = "bench-admin@example.com"
PASSWORD = "bench-password-0"  # noqa: S105 - throwaway accounts in a temporary database


def prepare(folder: Path, database: str | None) -> Any:
    """The app on a database holding the large shape, its 100,000 accounts and an admin."""
    os.environ.update(
        {
            "AUTHZ_DATABASE_URL": database or f"sqlite:///{folder / 'bench.db'}",
            "AUTHZ_SECRET_KEY": "bench-secret-key-" + "x" * 32,
            "AUTHZ_INSTANCE_PATH": str(folder / "instance"),
            "AUTHZ_REGISTRATION": "open",
            "AUTHZ_MAIL_BACKEND": "dev",
        }
    )
    from bench.app import create_bench_app
    from service import users
    from service.bootstrap import init_database
    from service.extensions import db
    from service.models import User

    app = create_bench_app()
    with app.app_context():
        init_database(actor="bench")
        engine = app.extensions["authz"]
        shape = SHAPES["large"]
        with engine.store.transaction() as session:
            engine.store.insert_rules(session, shape.rows())
        hashed = users.passwords().hash(PASSWORD)
        now = dt.datetime.now(dt.UTC)
        rows = [
            {
                "email": f"user{u}@example.com",
                "password_hash": hashed,
                "session_token": f"bench-{u}",
                "active": True,
                "verified_at": now,
            }
            for u in range(shape.users)
        ]
        with db.engine.begin() as conn:
            for start in range(0, len(rows), 10_000):
                conn.execute(sa.insert(User), rows[start : start + 10_000])
        engine.load()
        users.create(ADMIN, PASSWORD, roles=["admin"], actor="bench", source="cli")
        count = db.session.scalar(sa.select(sa.func.count()).select_from(User))
        print(f"policy: {len(engine.rules()):,} rows ({engine.snapshot.kind}); accounts: {count:,}")
    return app


def csrf(client: Any, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert found is not None, page[:300]
    return found[1]


def timed(client: Any, method: str, path: str, status: int, **kwargs: Any) -> float:
    """One request's time in milliseconds, its status checked."""
    started = time.perf_counter()
    response = client.open(path, method=method, **kwargs)
    elapsed = time.perf_counter() - started
    assert response.status_code == status, (path, response.status_code)
    return elapsed * 1000


def summary(name: str, values: list[float], base: float) -> str:
    values = sorted(values)
    median = statistics.median(values)
    p90 = values[int(len(values) * 0.9) - 1]
    return (
        f"{name:<34} median {median:7.2f} ms   p90 {p90:7.2f} ms   "
        f"min {values[0]:7.2f} ms   {median / base:6.1f}x the baseline"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--database", default=None, help="a SQLAlchemy URL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = prepare(Path(tmp), args.database)
        from service import users

        client = app.test_client()
        page = [timed(client, "GET", "/login", 200) for _ in range(args.rounds)]
        base = statistics.median(page)

        # Time spent hashing inside each request, to take it out of the registration's.
        hashing: list[float] = []
        with app.app_context():
            hasher = users.passwords()
        real_hash = hasher.hash

        def timed_hash(password: str) -> str:
            started = time.perf_counter()
            try:
                return real_hash(password)
            finally:
                hashing.append((time.perf_counter() - started) * 1000)

        hasher.hash = timed_hash  # type: ignore[method-assign]

        register = []
        beyond = []
        for n in range(args.rounds):
            visitor = app.test_client()
            token = csrf(visitor, "/register")
            data = {
                "email": f"new{n}@example.com",
                "password": PASSWORD,
                "confirm": PASSWORD,
                "csrf_token": token,
            }
            hashed_before = len(hashing)
            register.append(timed(visitor, "POST", "/register", 302, data=data))
            beyond.append(register[-1] - sum(hashing[hashed_before:]))

        logout = []
        for n in range(args.rounds):
            member = app.test_client()
            token = csrf(member, "/login")
            # The accounts just registered hold the default role, which may log out.
            data = {"email": f"new{n}@example.com", "password": PASSWORD, "csrf_token": token}
            assert member.post("/login", data=data).status_code == 302
            token = csrf(member, "/logout")
            logout.append(timed(member, "POST", "/logout", 302, data={"csrf_token": token}))

        admin = app.test_client()
        token = csrf(admin, "/login")
        admin.post("/login", data={"email": ADMIN, "password": PASSWORD, "csrf_token": token})
        api_token = admin.get("/api/v1/csrf").json["csrf_token"]
        change = []
        for n in range(args.rounds):
            revision = admin.get("/api/v1/policy/rules?per_page=1").json["revision"]
            body = {
                "subject": "user",
                "path": f"/bench/{n}",
                "methods": "GET",
                "revision": revision,
            }
            headers = {"X-CSRFToken": api_token}
            change.append(
                timed(admin, "POST", "/api/v1/policy/rules", 201, json=body, headers=headers)
            )

        print(f"baseline: GET /login, median {base:.2f} ms ({args.rounds} rounds each)")
        print(summary("argon2id hash (in the request)", hashing[: args.rounds], base))
        print(summary("POST /register", register, base))
        print(summary("POST /register beyond the hash", beyond, base))
        print(summary("POST /logout", logout, base))
        print(summary("POST /api/v1/policy/rules (1 row)", change, base))


if __name__ == "__main__":
    main()
