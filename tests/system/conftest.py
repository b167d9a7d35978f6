"""Helpers for the system tests: real processes (the ``authz`` script, flask, gunicorn)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The repository root, found from this file so the tests run from any directory.
REPO = Path(__file__).resolve().parents[2]
#: The interpreter (and its scripts) the suite runs under: the editable install.
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    """The current environment without any AUTHZ_* or FLASK_* variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHZ_", "FLASK_"))}
    env.update(settings)
    return env


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    """GET ``url``; return the status and the body (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - test URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class Server:
    """A server process started by a test; its output goes to a file in the test's tmp."""

    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def wait_until_serving(self, path: str = "/login", timeout: float = 60) -> None:
        """Wait until ``path`` answers 200; fail with the server's output otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited {self.process.returncode}:\n{self.output()}")
            try:
                if get(self.base + path, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"server did not answer {path} within {timeout}s:\n{self.output()}")

    def terminate(self, timeout: float = 30) -> int:
        """Send SIGTERM (to gunicorn's master: a graceful stop) and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"server ignored SIGTERM for {timeout}s:\n{self.output()}")
        return self.process.returncode


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start a server command in a directory; every server started is stopped afterwards."""
    started: list[Server] = []

    def start(
        argv: list[str], *, port: int, cwd: Path, env: Mapping[str, str], name: str = "server"
    ) -> Server:
        log = tmp_path / f"{name}-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT
            )
        server = Server(process, f"http://127.0.0.1:{port}", log)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def serve_gunicorn(
    tmp_path: Path, start_server: Callable[..., Server], env: Mapping[str, str]
) -> Server:
    """``authz db init``, then the shipped gunicorn settings on a free port, each request
    logged as ``access pid=PID METHOD PATH STATUS``; returned once it serves."""
    init = subprocess.run(
        [str(BIN / "authz"), "db", "init"],
        cwd=tmp_path,
        env=dict(env),
        capture_output=True,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    port = free_port()
    server = start_server(
        [
            str(BIN / "gunicorn"),
            "-c",
            "python:service.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "-",
            "--access-logformat",
            "access pid=%(p)s %(m)s %(U)s %(s)s",
            "service:create_app()",
        ],
        port=port,
        cwd=tmp_path,
        env=env,
        name="gunicorn",
    )
    server.wait_until_serving()
    return server


def assert_one_line(output: str, expected_start: str) -> None:
    """The output is exactly one line, starting as expected, with no traceback."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith(expected_start), output
