"""Memory benchmark: gunicorn workers holding the huge policy (1,001,000 rows).

For 1, 2 and 4 workers, with and without ``preload_app``, it starts the real server
(``gunicorn -c python:service.gunicorn_conf 'service:create_app()'``) on one database,
waits until every worker holds the policy, and reads each process's resident set size
(RSS) and proportional set size (PSS: shared pages divided among the processes sharing
them) from ``/proc/<pid>/smaps_rollup``: once idle, and again after decisions spread
over the whole policy (``/api/v1/check/batch`` with a service token), since every
decision writes reference counts into the pages it reads and so unshares them.

The total is the sum of the workers' and the master's PSS: what the server costs the
machine. Run by hand:

    python bench/memory.py [--workers 1 2 4] [--preload both|on|off] [--database-url URL]
                           [--rows-from huge.db] [--batches 50]

Without ``--database-url`` it builds a SQLite database in a temporary folder (rows copied
from ``--rows-from``, a SQLite file holding the shape's casbin_rule table, when given:
much faster than inserting them).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder comes first on the path, and bench/http.py would stand in
# for the standard library's http package (urllib needs the real one).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

from authz import Change  # noqa: E402
from authz import Rule  # noqa: E402
from bench.shapes import SHAPES  # noqa: E402
from bench.shapes import Huge  # noqa: E402

SECRET_KEY = "bench-secret-key-" + "x" * 32


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(url: str, folder: Path, rows_from: Path | None, shape: Huge) -> str:
    """Initialise the database at ``url`` with the shape's rows; return a bench token."""
    os.environ.update(
        {
            "AUTHZ_DATABASE_URL": url,
            "AUTHZ_SECRET_KEY": SECRET_KEY,
            "AUTHZ_INSTANCE_PATH": str(folder / "instance"),
            "AUTHZ_POLL_INTERVAL": "0",
        }
    )
    from service import create_app
    from service import stop_background
    from service import tokens
    from service.bootstrap import init_database

    app = create_app()
    with app.app_context():
        init_database(actor="bench")
        engine = app.extensions["authz"]
        started = time.perf_counter()
        if rows_from is not None and url.startswith("sqlite:///"):
            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                conn.execute("ATTACH DATABASE ? AS rows", (str(rows_from),))
                conn.execute(
                    "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3, v4, v5) "
                    "SELECT ptype, v0, v1, v2, v3, v4, v5 FROM rows.casbin_rule ORDER BY id"
                )
        else:
            with engine.store.transaction() as session:
                engine.store.insert_rules(session, shape.rows())
        print(f"rows written in {time.perf_counter() - started:.1f} s", flush=True)
        engine.load()
        engine.apply(
            Change.adding(Rule("p", ("checker", "/api/v1/check/*", "POST", "allow"))),
            actor="bench",
            source="cli",
        )
        _token, secret = tokens.create(
            "bench", roles=["checker"], actor="bench", source="cli", expires_days=None
        )
        print(f"policy: {len(engine.rules()):,} rows, decider: {engine.snapshot.kind}")
    stop_background(app)
    return str(secret)


def memory(pid: int) -> tuple[float, float]:
    """RSS and PSS of a process, in MB (from /proc/<pid>/smaps_rollup)."""
    found = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:"):
                found[parts[0]] = int(parts[1]) / 1024
    return found["Rss:"], found["Pss:"]


def children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (gunicorn's workers)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(p) for p in text)
    return sorted(out)


def wait_loaded(master: int, port: int, workers: int, timeout: float) -> list[int]:
    """Wait until every worker answers /readyz with the policy loaded.

    A sync worker accepts connections only once its app (and policy) is built, so a
    worker answering is a worker loaded; the answers carry its pid.
    """
    deadline = time.monotonic() + timeout
    ready: set[int] = set()
    while time.monotonic() < deadline:
        pids = children(master)
        if len(pids) == workers and ready >= set(pids):
            return pids
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:  # noqa: S310 - local
                body = json.loads(answer.read())
            if body["policy_loaded"]:
                ready.add(int(body["pid"]))
        except (OSError, ValueError):
            time.sleep(0.5)
    raise RuntimeError("workers did not load the policy in time")


def traffic(port: int, secret: str, shape: Huge, batches: int) -> float:
    """Send ``batches`` calls of 1,000 checks over random users; return decisions/s."""
    rng = random.Random(11)
    started = time.perf_counter()
    for _ in range(batches):
        checks = []
        for i in range(1000):
            u = rng.randrange(shape.users)
            sub, obj, act = shape.allowed_request(u) if i % 2 else shape.denied_request(u)
            checks.append({"subject": sub, "path": obj, "method": act})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/check/batch",
            data=json.dumps({"checks": checks}).encode(),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - local
            answer = json.loads(response.read())
        allowed = [r["allowed"] for r in answer["results"]]
        assert allowed == [bool(i % 2) for i in range(1000)], "a wrong decision"
    return batches * 1000 / (time.perf_counter() - started)


def run(url: str, folder: Path, workers: int, preload: bool, secret: str, batches: int) -> dict:
    """Start gunicorn, measure idle and after traffic, stop it."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AUTHZ_", "FLASK_"))},
        "AUTHZ_DATABASE_URL": url,
        "AUTHZ_SECRET_KEY": SECRET_KEY,
        "AUTHZ_INSTANCE_PATH": str(folder / "instance"),
        "AUTHZ_WORKERS": str(workers),
        "AUTHZ_PRELOAD": "1" if preload else "0",
    }
    log = (folder / f"gunicorn-{workers}-{int(preload)}.log").open("wb")
    started = time.perf_counter()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:service.gunicorn_conf",
            "--timeout",
            "600",
            "--bind",
            f"127.0.0.1:{port}",
            "service:create_app()",
        ],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        pids = wait_loaded(server.pid, port, workers, timeout=900)
        ready = time.perf_counter() - started
        idle = {pid: memory(pid) for pid in [server.pid, *pids]}
        rate = traffic(port, secret, SHAPES["huge"], batches)  # type: ignore[arg-type]
        busy = {pid: memory(pid) for pid in [server.pid, *pids]}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    return {
        "pids": pids,
        "master": server.pid,
        "idle": idle,
        "busy": busy,
        "ready": ready,
        "rate": rate,
    }


def report(workers: int, preload: bool, result: dict) -> None:
    """Print one configuration's figures."""
    name = f"{workers} worker{'s' if workers > 1 else ''}, preload {'on' if preload else 'off'}"
    print(
        f"\n{name}: all workers loaded {result['ready']:.0f} s after start; "
        f"{result['rate']:,.0f} decisions/s through /check/batch"
    )
    for phase in ("idle", "busy"):
        figures = result[phase]
        master_rss, master_pss = figures[result["master"]]
        rss = [figures[p][0] for p in result["pids"]]
        pss = [figures[p][1] for p in result["pids"]]
        total = sum(pss) + master_pss
        print(
            f"  {phase:4}: worker RSS {statistics.median(rss):6.0f} MB (max {max(rss):.0f}), "
            f"worker PSS {statistics.median(pss):6.0f} MB (max {max(pss):.0f}), "
            f"master RSS {master_rss:5.0f} PSS {master_pss:5.0f}; total PSS {total:6.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--preload", choices=("both", "on", "off"), default="both")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--rows-from", type=Path, default=None)
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.preload]
    shape = SHAPES["huge"]
    assert isinstance(shape, Huge)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = args.database_url or f"sqlite:///{folder / 'memory.db'}"
        secret = prepare(url, folder, args.rows_from, shape)
        for preload in modes:
            for workers in args.workers:
                report(workers, preload, run(url, folder, workers, preload, secret, args.batches))


if __name__ == "__main__":
    main()
