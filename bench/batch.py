"""Batch decision benchmark: server time of one /check/batch call of 1,000 checks.

The policy is the large shape (110,000 rows) plus the default policy, in a temporary
SQLite database. The app is called as a WSGI application, in this process, with a
bearer token (the middleware, the token lookup, the view and the JSON answer are all
timed; the network is not). 1,000 varied checks: users allowed and denied, roles,
tokens and anonymous, several methods. Reported: wall-clock median, p95 and
minimum and CPU-time median over ``--calls`` calls, for /check/batch and for the older
/decisions/batch.

    python bench/batch.py [--shape large] [--calls 30] [--log full] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, this file's folder would come first on sys.path, and bench/http.py
# would shadow the standard library's http package: put the repository root there.
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

from flask import Flask  # noqa: E402

from authz import Change  # noqa: E402
from authz import Rule  # noqa: E402
from bench.shapes import SHAPES  # noqa: E402
from bench.shapes import Shape  # noqa: E402

BATCH = 1000


def prepare(folder: Path, shape: Shape, log: str) -> tuple[Flask, str]:
    """The app on a database holding the shape, the default policy and a bench token."""
    os.environ.update(
        {
            "AUTHZ_DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
            "AUTHZ_SECRET_KEY": "bench-secret-key-" + "x" * 32,
            "AUTHZ_INSTANCE_PATH": str(folder / "instance"),
            "AUTHZ_DECISION_LOG": log,
            "AUTHZ_DECISION_LOG_FILE": str(folder / "decisions.jsonl") if log != "off" else "",
        }
    )
    from service import create_app
    from service import tokens
    from service.bootstrap import init_database

    app = create_app()
    with app.app_context():
        init_database(actor="bench")
        engine = app.extensions["authz"]
        with engine.store.transaction() as session:
            engine.store.insert_rules(session, shape.rows())
        engine.load()
        engine.apply(
            Change.adding(
                Rule("p", ("checker", "/api/v1/check/*", "POST", "allow")),
                Rule("p", ("checker", "/api/v1/decisions/*", "POST", "allow")),
                Rule("p", ("group3", "/data/*", "DELETE", "deny")),
            ),
            actor="bench",
            source="cli",
        )
        _token, secret = tokens.create(
            "bench", roles=["checker"], actor="bench", source="cli", expires_days=None
        )
        tokens.create("reporter", roles=["group1"], actor="bench", source="cli")
        print(f"policy: {len(engine.rules()):,} rows, decider: {engine.snapshot.kind}")
    return app, secret


def checks(shape: Shape, n: int) -> list[dict[str, str]]:
    """``n`` varied checks: users allowed and denied, roles, tokens, anonymous."""
    rng = random.Random(7)
    out: list[dict[str, str]] = []
    methods = ["GET", "GET", "POST", "HEAD", "DELETE"]
    for i in range(n):
        kind = i % 10
        u = rng.randrange(shape.users)
        if kind < 4:
            sub, obj, act = shape.allowed_request(u)
        elif kind < 7:
            sub, obj, act = shape.denied_request(u)
        elif kind == 7:
            role = rng.randrange(shape.roles)
            sub, obj, act = f"group{role}", f"/data/{role // 10}/r{i}", rng.choice(methods)
        elif kind == 8:
            sub, obj, act = "token:reporter", f"/data/0/item{i}", rng.choice(methods)
        else:
            sub, obj, act = "anonymous", rng.choice(["/login", "/", "/static/app.css"]), "GET"
        out.append({"subject": sub, "path": obj, "method": act})
    return out


def caller(app: Flask, path: str, body: bytes, secret: str) -> Callable[..., dict[str, Any] | None]:
    """A function calling the WSGI app once with this body (the answer parsed on request:
    a client's work, not the server's)."""
    wsgi = app.wsgi_app
    status: list[str] = []

    def start_response(s: str, _headers: list[tuple[str, str]], *_exc: Any) -> None:
        status.append(s)

    def call(parse: bool = False) -> dict[str, Any] | None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "RAW_URI": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Bearer {secret}",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status.clear()
        chunks = wsgi(environ, start_response)
        data = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        assert status[0].startswith("200"), (status, data[:300])
        return json.loads(data) if parse else None

    return call


def measure(call: Callable[[], Any], calls: int) -> dict[str, float]:
    """Wall-clock median, p95 and minimum, and CPU median, in ms, of ``calls`` calls.

    The CPU time (this thread's) is what one call costs the server when it has a core
    to itself; on a busy machine the wall-clock figures include waiting for one.
    """
    for _ in range(3):
        call()
    wall, cpu = [], []
    for _ in range(calls):
        start, start_cpu = time.perf_counter(), time.thread_time()
        call()
        cpu.append((time.thread_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    wall.sort()
    return {
        "median": statistics.median(wall),
        "p95": wall[min(len(wall) - 1, int(len(wall) * 0.95))],
        "min": wall[0],
        "cpu": statistics.median(cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="large")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--log", default="off", choices=["off", "sample", "full"])
    parser.add_argument("--profile", action="store_true", help="cProfile the /check/batch calls")
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    with tempfile.TemporaryDirectory(prefix="authz-batch-") as tmp:
        app, secret = prepare(Path(tmp), shape, args.log)
        batch = checks(shape, BATCH)
        check_body = json.dumps({"checks": batch}).encode()
        decisions_body = json.dumps({"requests": batch}).encode()
        check_call = caller(app, "/api/v1/check/batch", check_body, secret)
        answer = check_call(parse=True)
        assert answer is not None
        allowed = sum(r["allowed"] for r in answer["results"])
        print(
            f"{len(answer['results'])} checks ({len(check_body) / 1024:.0f} KB): "
            f"{allowed} allowed, {len(batch) - allowed} denied; decision log {args.log}"
        )
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.calls):
                check_call()
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        results = {
            "/check/batch": measure(check_call, args.calls),
            "/decisions/batch": measure(
                caller(app, "/api/v1/decisions/batch", decisions_body, secret), args.calls
            ),
        }
        print(
            f"\n{'endpoint':20}{'median ms':>11}{'p95 ms':>9}{'min ms':>9}{'CPU median ms':>15}"
            f"   ({args.calls} calls)"
        )
        for endpoint, r in results.items():
            print(
                f"{endpoint:20}{r['median']:>11.2f}{r['p95']:>9.2f}{r['min']:>9.2f}{r['cpu']:>15.2f}"
            )
        from service import stop_background

        stop_background(app)


if __name__ == "__main__":
    main()
