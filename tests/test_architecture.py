"""Layering: the policy engine is framework-free, so importing it never loads Flask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WEB = ("flask", "werkzeug")

#: Run in a fresh interpreter: the test process itself may already hold Flask.
PROBE = """
import importlib, json, pkgutil, sys
import {module}
if {walk}:
    import authz
    for info in pkgutil.walk_packages(authz.__path__, "authz."):
        importlib.import_module(info.name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {web!r})
authz_modules = sorted(m for m in sys.modules if m == "authz" or m.startswith("authz."))
import flask  # the probe can see Flask, so an empty list above means something
print(json.dumps({{"web": loaded, "authz": authz_modules}}))
"""


def run_probe(module: str, walk: bool) -> dict[str, list[str]]:
    """Import ``module`` (and every authz submodule if ``walk``) in a new interpreter."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, walk=walk, web=WEB)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_import_authz_leaves_flask_out() -> None:
    """`import authz` loads neither flask nor werkzeug."""
    probe = run_probe("authz", walk=False)
    assert probe["web"] == []
    assert "authz.engine" in probe["authz"]


def test_every_authz_module_leaves_flask_out() -> None:
    """No module of authz (csvio and sync included) pulls in flask or werkzeug."""
    probe = run_probe("authz", walk=True)
    assert probe["web"] == []
    assert {"authz.csvio", "authz.sync", "authz.paths"} <= set(probe["authz"])


@pytest.mark.parametrize("module", ["flask"])
def test_the_probe_would_notice(module: str) -> None:
    """Sanity check: importing Flask itself is reported, so the probe is not blind."""
    probe = run_probe(module, walk=False)
    assert set(WEB) <= set(probe["web"])
