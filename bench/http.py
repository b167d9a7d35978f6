"""HTTP benchmark: the service under gunicorn (2 workers) against the same app without
the authorization middleware, back to back, with wrk on 127.0.0.1.

The policy is the large shape (110,000 rows) plus the default policy. A logged-in user
requests a page the policy allows and one it denies (403).

    python bench/http.py [--shape large] [--duration 10] [--connections 32]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and its name would shadow
# the standard library's http package: put the repository root there instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from authz import Change  # noqa: E402
from authz import Rule  # noqa: E402
from authz import csvio  # noqa: E402
from bench.shapes import SHAPES  # noqa: E402

USER = "user0@example.com"
PASSWORD = "bench-password-0"  # noqa: S105 - a throwaway account in a temporary database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(folder: Path, shape_name: str) -> dict[str, str]:
    """Create the database with the shape, the default policy and the bench user."""
    env = {
        "AUTHZ_DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
        "AUTHZ_SECRET_KEY": "bench-secret-key-" + "x" * 32,
        "AUTHZ_INSTANCE_PATH": str(folder / "instance"),
        "AUTHZ_ARGON2_TIME_COST": "1",
        "AUTHZ_ARGON2_MEMORY_COST": "8",
        "AUTHZ_ARGON2_PARALLELISM": "1",
    }
    os.environ.update(env)
    from bench.app import create_bench_app
    from service import users
    from service.bootstrap import init_database

    app = create_bench_app()
    with app.app_context():
        init_database(actor="bench")
        engine = app.extensions["authz"]
        with engine.store.transaction() as session:
            engine.store.insert_rules(session, SHAPES[shape_name].rows())
        engine.load()
        engine.apply(
            Change.adding(Rule("p", ("group0", "/bench/ok", "GET", "allow"))),
            actor="bench",
            source="cli",
        )
        users.create(USER, PASSWORD, roles=["user"], actor="bench", source="cli")
        print(f"policy: {len(engine.rules()):,} rows, decider: {engine.snapshot.kind}")
        assert len(csvio.export(engine.rules())) > 0
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)[1]  # type: ignore[index]
    response = client.post(
        "/login", data={"email": USER, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302, response.status_code
    env["COOKIE"] = f"session={client.get_cookie('session').value}"  # type: ignore[union-attr]
    return env


def serve(factory: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """Start gunicorn with 2 workers and wait until it answers."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            f"bench.app:{factory}()",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=1)  # noqa: S310
            time.sleep(1.0)  # let the second worker finish loading too
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("gunicorn did not start")


def wrk(
    url: str, cookie: str, duration: int, connections: int, headers: tuple[str, ...] = ()
) -> dict[str, float]:
    """Run wrk; return requests/s and latency percentiles (ms), and check status codes.

    ``cookie`` (when not empty) and each of ``headers`` ("Name: value") are sent with
    every request.
    """
    sent = ([f"Cookie: {cookie}"] if cookie else []) + list(headers)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            *(arg for header in sent for arg in ("-H", header)),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    result = {"rps": rps}
    result["requests"] = float(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        value = float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]  # type: ignore[index]
        result[f"p{pct}"] = value
    if "Non-2xx" in out:
        result["non2xx"] = float(re.search(r"Non-2xx or 3xx responses: (\d+)", out)[1])  # type: ignore[index]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="large")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    folder = Path(tempfile.mkdtemp(prefix="authz-bench-"))
    env = prepare(folder, args.shape)
    cookie = env.pop("COOKIE")
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    # Alternate the two apps over several rounds: this machine's speed drifts, and
    # back-to-back rounds keep the comparison fair. The median round is reported.
    for _round in range(args.rounds):
        for factory in ("create_bare_app", "create_bench_app"):
            port = free_port()
            server = serve(factory, env, port)
            try:
                for page in ("ok", "denied"):
                    url = f"http://127.0.0.1:{port}/bench/{page}"
                    wrk(url, cookie, 2, args.connections)  # warm up
                    result = wrk(url, cookie, args.duration, args.connections)
                    runs.setdefault(page, {}).setdefault(factory, []).append(result)
            finally:
                server.terminate()
                server.wait()
    results = {
        page: {
            factory: sorted(rounds, key=lambda r: r["rps"])[len(rounds) // 2]
            for factory, rounds in by_app.items()
        }
        for page, by_app in runs.items()
    }
    shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{'page':10}{'app':14}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for page, by_app in results.items():
        for factory, label in (("create_bare_app", "bare"), ("create_bench_app", "authz")):
            r = by_app[factory]
            print(
                f"{page:10}{label:14}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
                f"{r.get('non2xx', 0):>9.0f}"
            )
        ratio = by_app["create_bench_app"]["rps"] / by_app["create_bare_app"]["rps"]
        print(f"{page:10}{'ratio':14}{ratio:>10.1%}")


if __name__ == "__main__":
    main()
