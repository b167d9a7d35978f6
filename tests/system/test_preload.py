"""gunicorn with ``preload_app`` (the shipped config): the master loads the policy once and
forks the workers, which must each decide correctly and each pick up later changes.

Real processes: gunicorn with three workers on SQLite, the ``authz`` script for the change.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.system.conftest import BIN
from tests.system.conftest import Server
from tests.system.conftest import clean_env
from tests.system.conftest import serve_gunicorn

WORKERS = 3
PROBE = "/preload-probe"


def status_of(port: int, path: str) -> int:
    """The status of one GET on a new connection (redirects not followed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def served(output: str, status: int) -> set[str]:
    """The worker pids whose access log shows the probe answered with ``status``."""
    return set(re.findall(rf"access pid=<(\d+)> GET {PROBE} {status}", output))


def test_preloaded_workers_decide_and_follow_changes(
    tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    instance = tmp_path / "instance"
    env = clean_env(AUTHZ_INSTANCE_PATH=str(instance), AUTHZ_WORKERS=str(WORKERS))
    server = serve_gunicorn(tmp_path, start_server, env)
    port = int(server.base.rsplit(":", 1)[1])
    output = server.output()
    assert len(re.findall(r"Policy loaded in the master \(revision \d+\)", output)) == 1, output

    # Denied to a visitor: every worker sends the browser to the login page.
    for _ in range(WORKERS * 15):
        assert status_of(port, PROBE) == 302
    assert len(served(server.output(), 302)) >= 2, "several workers answered"

    rows = tmp_path / "probe.csv"
    rows.write_text(f"p, anonymous, {PROBE}, GET, allow\n", encoding="utf-8")
    load = subprocess.run(
        [str(BIN / "authz"), "policy", "load", "--merge", str(rows)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=False,
    )
    assert load.returncode == 0, load.stderr

    # Allowed now (no view: 404), in every worker once its own poller saw the change.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        statuses = [status_of(port, PROBE) for _ in range(WORKERS * 15)]
        if set(statuses) == {404}:
            break
        time.sleep(0.2)
    assert set(statuses) == {404}, statuses
    after = server.output()
    allowed_by = served(after, 404)
    assert len(allowed_by) >= 2, "several workers decided on the change"

    assert server.terminate() == 0
    output = server.output()
    assert "Traceback" not in output
    assert len(re.findall(r"Worker \d+: policy poller and listener stopped", output)) == WORKERS
