"""Forward auth benchmark: /auth/forward against a bare page of the same app and server.

The service runs under gunicorn (2 workers) with the large policy shape (110,000 rows)
plus the default policy, 127.0.0.1 as its trusted proxy; wrk plays the proxy. For a
session cookie and for a bearer token alike, it measures requests/s of

- ``/bench/ok``, a page answering 200 (the middleware decides it, the view says "ok"),
- ``/auth/forward`` asked about ``GET /bench/ok`` (allowed: 200 with the subject),

alternating the two over several rounds (this machine's speed drifts, and other work
on it comes and goes). Each round's ratio compares two back-to-back runs; the median
ratio is reported, with the median requests/s of each endpoint. Forward auth must keep
at least 90% of the bare page's throughput.

On a shared machine requests/s swing with other processes' load; the CPU time the
gunicorn workers spent per request (from /proc) swings far less, and its inverse ratio
is the throughput ratio the two endpoints would have on an idle machine.

    python bench/forward.py [--shape large] [--duration 5] [--connections 16] [--rounds 9]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path: put the repository root there.
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from bench.http import free_port  # noqa: E402
from bench.http import prepare  # noqa: E402
from bench.http import serve  # noqa: E402
from bench.http import wrk  # noqa: E402

#: What the proxy asks about: a request the bench user (and token) may make.
ORIGINAL = ("X-Original-URI: /bench/ok", "X-Original-Method: GET", "X-Original-Host: bench")


def make_token() -> str:
    """Create a service token holding the bench user's role; return its secret."""
    from bench.app import create_bench_app
    from service import stop_background
    from service import tokens

    app = create_bench_app()
    try:
        with app.app_context():
            _token, secret = tokens.create("bench", roles=["group0"], actor="bench", source="cli")
    finally:
        stop_background(app)
    return secret


def worker_cpu(master: int) -> float:
    """CPU seconds (user + system) the gunicorn workers of ``master`` used so far."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    ticks = 0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="large")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    folder = Path(tempfile.mkdtemp(prefix="authz-bench-forward-"))
    env = prepare(folder, args.shape)
    cookie = env.pop("COOKIE")
    secret = make_token()
    env["AUTHZ_TRUSTED_PROXIES"] = "127.0.0.1"
    credentials = {"cookie": (cookie, ()), "token": ("", (f"Authorization: Bearer {secret}",))}
    targets = {"bare": ("/bench/ok", ()), "forward": ("/auth/forward", ORIGINAL)}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    port = free_port()
    server = serve("create_bench_app", {**os.environ, **env}, port)
    try:
        for cred, (cookie_value, cred_headers) in credentials.items():
            for path, headers in targets.values():  # warm up both
                wrk(f"http://127.0.0.1:{port}{path}", cookie_value, 2, args.connections,
                    cred_headers + headers)  # fmt: skip
            for n in range(args.rounds):
                # Alternate which goes first, so a drift in speed favours neither.
                order = list(targets.items())[:: 1 if n % 2 == 0 else -1]
                for target, (path, headers) in order:
                    cpu = worker_cpu(server.pid)
                    result = wrk(
                        f"http://127.0.0.1:{port}{path}",
                        cookie_value,
                        args.duration,
                        args.connections,
                        cred_headers + headers,
                    )
                    used = worker_cpu(server.pid) - cpu
                    result["cpu_us"] = used / result["requests"] * 1e6
                    if result.get("non2xx"):
                        raise SystemExit(f"{cred} {target}: {result['non2xx']:.0f} non-2xx")
                    runs.setdefault((cred, target), []).append(result)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\n{'credential':12}{'endpoint':10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU us/req':>12}"
    )
    for cred in credentials:
        median = {}
        for target in targets:
            rounds = sorted(runs[(cred, target)], key=lambda r: r["rps"])
            median[target] = r = rounds[len(rounds) // 2]
            cpu = sorted(x["cpu_us"] for x in rounds)[len(rounds) // 2]
            median[target] = {**r, "cpu_us": cpu}
            print(
                f"{cred:12}{target:10}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{cpu:>12.0f}"
            )
        pairs = zip(runs[(cred, "forward")], runs[(cred, "bare")], strict=True)
        ratios = sorted(f["rps"] / b["rps"] for f, b in pairs)
        ratio = ratios[len(ratios) // 2]
        spread = f"(rounds: {', '.join(f'{r:.0%}' for r in ratios)})"
        print(f"{cred:12}{'ratio':10}{ratio:>10.1%}  {spread}")
        by_cpu = median["bare"]["cpu_us"] / median["forward"]["cpu_us"]
        print(f"{cred:12}{'CPU ratio':10}{by_cpu:>10.1%}  (bare CPU/request over forward's)")


if __name__ == "__main__":
    main()
