"""Install anywhere: a wheel built from the repository, in a fresh venv, from an empty folder.

Builds the wheel once per session and installs it with its dependencies into a new venv
(about a minute); deselect with ``-m 'not wheel'`` while iterating.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system.conftest import REPO
from tests.system.conftest import Server
from tests.system.conftest import clean_env
from tests.system.conftest import free_port

pytestmark = pytest.mark.wheel

#: The files the package ships, and the top-level files they are copies of.
SHIPPED = {"model.conf": "model.conf", "default.csv": "policies/default.csv"}


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from the repository."""
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)])
    (built,) = out.glob("authz_service-*.whl")
    return built


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel and its dependencies, nothing from the checkout."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(root)])
    _run([str(root / "bin" / "pip"), "install", "-q", str(wheel)])
    return root


def venv_env(venv: Path, **settings: str) -> dict[str, str]:
    """An environment that finds only the venv's programs and packages."""
    env = clean_env(**settings)
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(name, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_wheel_carries_the_top_level_files_byte_for_byte(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name, top_level in SHIPPED.items():
            assert archive.read(f"service/shipped/{name}") == (REPO / top_level).read_bytes()


def test_installed_service_runs_from_an_empty_directory(
    venv: Path, tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    bin_ = venv / "bin"
    env = venv_env(
        venv,
        AUTHZ_ADMIN_EMAIL="admin@example.com",
        AUTHZ_ADMIN_PASSWORD="admin-password-1",
    )

    where = _run(
        [
            str(bin_ / "python"),
            "-c",
            "import service, service.config as c; "
            "print(service.__file__); print(c.Settings().model_path)",
        ],
        cwd=empty,
        env=env,
    ).stdout.split()
    site = venv / "lib"
    assert all(Path(p).is_relative_to(site) for p in where), where  # not the checkout
    for name, top_level in SHIPPED.items():
        installed = Path(where[0]).parent / "shipped" / name
        assert not installed.is_symlink()
        assert installed.read_bytes() == (REPO / top_level).read_bytes()

    upgrade = _run([str(bin_ / "authz"), "db", "upgrade"], cwd=empty, env=env)
    assert upgrade.stdout.startswith("Schema upgraded from empty to revision"), upgrade.stdout
    init = _run([str(bin_ / "authz"), "db", "init"], cwd=empty, env=env)
    assert init.stdout.startswith("Database ready; default policy loaded"), init.stdout
    assert init.stderr == ""

    servers = {
        "authz serve": [str(bin_ / "authz"), "serve", "--port", "{port}"],
        "authz serve --production": [
            str(bin_ / "authz"),
            "serve",
            "--production",
            "--port",
            "{port}",
        ],
        "gunicorn": [
            str(bin_ / "gunicorn"),
            "--no-control-socket",
            "--bind",
            "127.0.0.1:{port}",
            "service:create_app()",
        ],
        "gunicorn with the shipped config": [
            str(bin_ / "gunicorn"),
            "-c",
            "python:service.gunicorn_conf",
            "--bind",
            "127.0.0.1:{port}",
            "service:create_app()",
        ],
    }
    for name, argv in servers.items():
        port = free_port()
        server = start_server(
            [part.format(port=port) for part in argv], port=port, cwd=empty, env=env, name=name
        )
        server.wait_until_serving("/login")
        status = server.terminate()
        # gunicorn stops gracefully (0); the development server just dies of the signal.
        assert status == (-15 if name == "authz serve" else 0), f"{name}:\n{server.output()}"
        assert "Traceback" not in server.output(), f"{name}:\n{server.output()}"
        assert "policy not loaded" not in server.output(), f"{name}:\n{server.output()}"

    assert list(empty.iterdir()) == []  # the data lives in the venv's instance folder
    assert (venv / "var" / "service-instance" / "authz.db").is_file()
