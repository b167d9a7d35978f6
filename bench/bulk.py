"""``authz policy load`` and ``authz policy export`` of a large policy, as an operator runs them.

Writes a shape's rows to a policy CSV, points the CLI at a database of its own (a fresh
PostgreSQL database it creates and drops, or a SQLite file in a temporary folder), runs
``authz db upgrade``, then times in subprocesses, each with its own peak RSS:

1. ``authz policy load FILE`` into the empty table (only the default policy's rows);
2. the same load again: nothing to add (a no-op);
3. ``authz policy export`` to a file (checked to hold every row of the CSV).

    python bench/bulk.py                                   # PostgreSQL, shape huge
    python bench/bulk.py --sqlite
    python bench/bulk.py --database postgresql+psycopg://postgres@127.0.0.1/postgres
    python bench/bulk.py --authz /work/main/.venv/bin/authz   # another checkout's CLI
    python bench/bulk.py --repeat 3 --shape huge
    python bench/bulk.py --authz /work/main/.venv/bin/authz --steps reload,export

Prints seconds and peak RSS (MB) of each command, and with ``--repeat`` the median and
range. ``--authz`` runs another installation's ``authz`` script (e.g. main's, as the
baseline) on the same file and the same kind of database; ``--steps`` times only some
commands (the file is then loaded untimed by ``--setup-authz``, this checkout's CLI).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from authz import csvio  # noqa: E402 - after the path is set, to run as a script
from bench.shapes import SHAPES  # noqa: E402

#: This checkout's CLI: the ``authz`` script beside the interpreter running the bench.
HERE_AUTHZ = Path(sys.executable).parent / "authz"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def write_csv(shape_name: str, path: Path) -> int:
    """Write the shape's rows as a policy file; return the number of rows."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        out.write(f"# bench shape {shape_name}\n")
        for rule in SHAPES[shape_name].rows():
            out.write(csvio.format_rule(rule) + "\n")
            count += 1
    return count


def run(authz: str, args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run one CLI command; return seconds, peak RSS in MB and its output."""
    # Each command runs under a helper process of its own, so RUSAGE_CHILDREN measures
    # that command's peak alone (ru_maxrss of children is the largest ever waited for).
    probe = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "s = time.perf_counter() - t;"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "sys.stdout.write(f'{s} {r} {p.returncode}\\n' + p.stdout[-2000:] + p.stderr[-2000:])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, authz, *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    head, _, output = done.stdout.partition("\n")
    seconds, rss_kb, status = head.split()
    if status != "0":
        raise SystemExit(f"authz {' '.join(args)} failed ({status}):\n{output}")
    return float(seconds), int(rss_kb) / 1024, output


class Database:
    """A database of the bench's own: created before, dropped after."""

    def __init__(self, url: str | None, sqlite: bool, folder: Path) -> None:
        self.sqlite = sqlite
        self.folder = folder
        self.admin_url = url or PG_DEFAULT
        self.name = f"authz_bench_{secrets.token_hex(4)}"
        self.url = ""

    def create(self) -> str:
        if self.sqlite:
            path = self.folder / f"{self.name}.db"
            path.unlink(missing_ok=True)
            self.url = f"sqlite:///{path}"
            return self.url
        import sqlalchemy as sa

        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        admin.dispose()
        self.url = str(sa.make_url(self.admin_url).set(database=self.name).render_as_string(False))
        return self.url

    def drop(self) -> None:
        if self.sqlite:
            for path in self.folder.glob(f"{self.name}.db*"):
                path.unlink()
            return
        import sqlalchemy as sa

        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        admin.dispose()


def one_round(
    authz: str,
    csv_path: Path,
    rows: int,
    db: Database,
    folder: Path,
    steps: list[str],
    setup: str,
) -> dict[str, tuple[float, float]]:
    """Upgrade a fresh database, then time load, no-op load and export."""
    url = db.create()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")},
        "AUTHZ_DATABASE_URL": url,
        "AUTHZ_INSTANCE_PATH": str(folder / "instance"),
        "AUTHZ_LOG_LEVEL": "WARNING",
    }
    out: dict[str, tuple[float, float]] = {}
    try:
        subprocess.run([setup, "db", "upgrade"], env=env, check=True, capture_output=True)
        load = ["policy", "load", str(csv_path)]
        if "load" in steps:
            seconds, rss, text = run(authz, load, env)
            out["load"] = (seconds, rss)
        else:  # loaded by the setup CLI, untimed
            seconds, rss, text = run(setup, load, env)
        assert f"{rows} added" in text, text
        if "reload" in steps:
            seconds, rss, text = run(authz, ["policy", "load", str(csv_path)], env)
            out["reload (no-op)"] = (seconds, rss)
            assert "0 added" in text, text
        if "export" in steps:
            exported = folder / "export.csv"
            seconds, rss, text = run(authz, ["policy", "export", str(exported)], env)
            out["export"] = (seconds, rss)
            with exported.open(encoding="utf-8") as f:
                lines = sum(1 for _ in f)
            assert lines >= rows, (lines, rows)
            exported.unlink()
    finally:
        db.drop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="PostgreSQL URL to create the bench database from")
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead")
    parser.add_argument("--shape", default="huge", choices=sorted(SHAPES))
    parser.add_argument("--authz", default=str(HERE_AUTHZ), help="the CLI to time")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--steps",
        default="load,reload,export",
        help="which commands to time (comma-separated: load, reload, export)",
    )
    parser.add_argument(
        "--setup-authz",
        default=str(HERE_AUTHZ),
        help="the CLI that upgrades the database, and loads the file when load is not timed",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authz-bulk-") as tmp:
        folder = Path(tmp)
        csv_path = folder / f"{args.shape}.csv"
        start = time.perf_counter()
        rows = write_csv(args.shape, csv_path)
        size = csv_path.stat().st_size / 1e6
        print(f"{args.shape}: {rows} rows, {size:.0f} MB CSV ({time.perf_counter() - start:.1f} s)")
        kind = "sqlite" if args.sqlite else "postgresql"
        print(f"backend {kind}, CLI {args.authz}")
        results: dict[str, list[tuple[float, float]]] = {}
        for n in range(args.repeat):
            db = Database(args.database, args.sqlite, folder)
            steps = args.steps.split(",")
            got = one_round(args.authz, csv_path, rows, db, folder, steps, args.setup_authz)
            for step, (seconds, rss) in got.items():
                results.setdefault(step, []).append((seconds, rss))
                print(f"  round {n + 1}: {step:<15} {seconds:7.1f} s  peak RSS {rss:6.0f} MB")
        if args.repeat > 1:
            print("median [range]:")
            for step, values in results.items():
                secs = [s for s, _ in values]
                rss = [r for _, r in values]
                print(
                    f"  {step:<15} {statistics.median(secs):7.1f} s"
                    f" [{min(secs):.1f}-{max(secs):.1f}]"
                    f"  peak RSS {statistics.median(rss):6.0f} MB [{min(rss):.0f}-{max(rss):.0f}]"
                )


if __name__ == "__main__":
    main()
